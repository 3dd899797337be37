"""What JavaScript and TypeScript cost the code-interpreter template: build time and size with
Debian's ``nodejs`` and ``node-typescript`` against the same template without them, built in
turn (alternating, ``ROUNDS`` each) in a private images directory holding a copy of the base
image, so the shared images are not touched. Needs root and the Debian mirror; minutes per build.

    .venv/bin/python -m bench.template_languages [ROUNDS]
"""

from __future__ import annotations

import dataclasses
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stockade.config import default_images_dir
from stockade.images import templates
from stockade.images.store import ImageStore

from ._common import machine, table

NODE = ("nodejs", "node-typescript")


def build(images: Path, packages: tuple[str, ...]) -> tuple[float, int]:
    """Seconds to build the template with ``packages``, and its size in bytes."""
    full = templates.TEMPLATES["code-interpreter"]
    saved = dict(templates.TEMPLATES)
    templates.TEMPLATES["code-interpreter"] = dataclasses.replace(full, packages=packages)
    try:
        started = time.perf_counter()
        info = templates.build_template(ImageStore(images), "code-interpreter", force=True)
        return time.perf_counter() - started, info.size_bytes
    finally:
        templates.TEMPLATES.clear()
        templates.TEMPLATES.update(saved)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    full = templates.TEMPLATES["code-interpreter"].packages
    without = tuple(p for p in full if p not in NODE)
    print(machine())
    seconds: dict[str, list[float]] = {"with": [], "without": []}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tpl-", dir="/var/tmp") as tmp:
        images = Path(tmp)
        base = default_images_dir() / "base"
        (images / "base").mkdir()
        subprocess.run(
            ["cp", "-a", str(base / "image.json"), str(base / "rootfs"), str(images / "base")], check=True
        )
        for _ in range(rounds):
            for label, packages in (("without", without), ("with", full)):
                took, size = build(images, packages)
                seconds[label].append(took)
                sizes[label] = size
                print(f"  {label} node: {took:.1f} s, {size / 2**20:.0f} MiB", flush=True)
    base_s, node_s = statistics.median(seconds["without"]), statistics.median(seconds["with"])
    table(
        [
            ("code-interpreter template", "build s (median)", "size MiB"),
            ("without nodejs, node-typescript", f"{base_s:.1f}", f"{sizes['without'] / 2**20:.0f}"),
            ("with them", f"{node_s:.1f}", f"{sizes['with'] / 2**20:.0f}"),
            (
                "difference (ratio)",
                f"+{node_s - base_s:.1f} ({node_s / base_s:.2f}x)",
                f"+{(sizes['with'] - sizes['without']) / 2**20:.0f}",
            ),
        ]
    )


if __name__ == "__main__":
    main()
