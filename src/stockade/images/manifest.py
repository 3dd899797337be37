"""What a published template holds, so that a copy of it can be checked before it is used.

A manifest lists every entry below a ``rootfs/`` (path, type and mode, owner, then a regular
file's size and SHA-256, a symlink's target or a device's number) and the SHA-256 of the
image's ``image.json``. A host that adopts a template from shared storage checks its own copy
against the manifest written when the template was published, and refuses a copy that differs
(a file truncated or altered on shared storage, or damaged in transit) instead of running it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from .store import IMAGE_JSON, ROOTFS, ImageError

MANIFEST = "manifest.json"
#: How many differences an error names (the rest are counted).
SHOWN = 3


class DamagedCopy(ImageError):
    """A copy of a published template differs from what was published."""


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def describe(rootfs: Path) -> dict[str, list[Any]]:
    """Every entry below ``rootfs``: ``[mode, uid, gid, ...]`` by relative path (a regular
    file's size and digest, a symlink's target, a device's number; hard links hashed once)."""
    found: dict[str, list[Any]] = {}
    digests: dict[tuple[int, int], str] = {}
    stack = [""]
    while stack:
        relative = stack.pop()
        with os.scandir(os.path.join(rootfs, relative)) as entries:
            for entry in entries:
                path = os.path.join(relative, entry.name)
                st = entry.stat(follow_symlinks=False)
                what: list[Any] = [st.st_mode, st.st_uid, st.st_gid]
                if stat.S_ISREG(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if key not in digests:
                        digests[key] = _digest(entry.path)
                    what += [st.st_size, digests[key]]
                elif stat.S_ISLNK(st.st_mode):
                    what.append(os.readlink(entry.path))
                elif stat.S_ISDIR(st.st_mode):
                    stack.append(path)
                else:
                    what.append(st.st_rdev)
                found[path] = what
    return found


def write(image: Path, target: Path) -> None:
    """Write the manifest of the image directory ``image`` (``image.json``, ``rootfs/``) to
    ``target``."""
    manifest = {"image": _digest(str(image / IMAGE_JSON)), "rootfs": describe(image / ROOTFS)}
    target.write_text(json.dumps(manifest, separators=(",", ":")))


def _what(entry: list[Any] | None) -> str:
    if entry is None:
        return "missing"
    mode = entry[0]
    if stat.S_ISREG(mode):
        return f"{entry[3]} bytes, sha256 {entry[4][:12]}, mode {mode:o}, owner {entry[1]}:{entry[2]}"
    return f"mode {mode:o}, owner {entry[1]}:{entry[2]}" + (f", {entry[3]!r}" if len(entry) > 3 else "")


def check(image: Path, manifest: Path, what: str) -> None:
    """Raise :class:`DamagedCopy` unless the image directory ``image`` is what ``manifest``
    describes; ``what`` names the copy in the message."""
    try:
        expected = json.loads(manifest.read_text())
        rootfs, image_json = expected["rootfs"], expected["image"]
        if not isinstance(rootfs, dict) or not isinstance(image_json, str):
            raise TypeError("not a manifest")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DamagedCopy(f"{what} has no readable {MANIFEST} ({exc}), so it cannot be checked") from None
    try:
        if _digest(str(image / IMAGE_JSON)) != image_json:
            raise DamagedCopy(f"{what} is damaged: its {IMAGE_JSON} differs from the one published")
        found = describe(image / ROOTFS)
    except OSError as exc:
        raise DamagedCopy(f"{what} is damaged: {exc}") from None
    wrong = sorted(p for p in rootfs.keys() | found.keys() if rootfs.get(p) != found.get(p))
    if wrong:
        shown = "; ".join(
            f"/{p}: {_what(found.get(p))} (published: {_what(rootfs.get(p))})" for p in wrong[:SHOWN]
        )
        more = f" and {len(wrong) - SHOWN} more" if len(wrong) > SHOWN else ""
        raise DamagedCopy(f"{what} is damaged: {shown}{more}")
