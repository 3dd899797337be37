"""Stockade's interpreter server: one code context, run inside a sandbox by the engine.

Standard library only at import time, like the agent (it runs on whatever python3 the image
has); the Jupyter stack (``zmq``, ``jupyter_client``, ``ipykernel``) is imported only by a
context that needs a kernel.

The engine (``stockade.engine.interpreter``) uploads every module of this package into the
sandbox as the package ``stockade_interpreter`` and starts one server per context through the
agent: ``python3 -I .../stockade_interpreter/__main__.py --language python``. The server drives
a Jupyter kernel (for ``python`` and any language with an installed kernelspec), a bash shell
(so bash contexts work in any image) or, for ``javascript`` and ``typescript``, a ``node``.

Modules, one job each: :mod:`.wire` (events out, limits), :mod:`.kernel` (the Jupyter executor),
:mod:`.ipykernel_runner` (what runs inside the python kernel process), :mod:`.bash` (the bash
executor), :mod:`.node` and :mod:`.node_driver` (the JavaScript/TypeScript executor and its
program), :mod:`.server` (requests in, one execution at a time) and ``__main__`` (the entry).
"""
