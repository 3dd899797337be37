"""Entry point: ``python3 -I <dir>/stockade_interpreter/__main__.py --language python``.

The engine runs this file by path under ``-I``, which puts no directory on ``sys.path``, so it
makes its package importable itself: it puts the package's parent directory first. Run without
``-I`` (as the python kernel is, through the kernelspec ``--ipykernel``), Python puts this
file's own directory first, where the package's modules would shadow modules of the same name
(``server``, ``kernel``, ...): that entry is removed before anything else is imported.
"""

import importlib
import os
import sys


def _main() -> None:
    package = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != package]
    sys.path.insert(0, os.path.dirname(package))
    importlib.import_module(os.path.basename(package) + ".server").main()


if __name__ == "__main__":
    _main()
