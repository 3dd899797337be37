"""Build contexts: unpacking an untrusted tar, and what COPY may read."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from stockade.images.build_context import ContextError, plan_copy, unpack


def make_tar(path: Path, members: list[tuple[str, bytes | str]]) -> Path:
    """Regular files (bytes) and symbolic links (str: the target)."""
    with tarfile.open(path, "w") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


def test_links_are_kept_but_nothing_is_written_through_them(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "ctx"
    dest.mkdir()
    unpack(make_tar(tmp_path / "ok.tar", [("abs", "/etc"), ("a.txt", b"a")]), dest)
    assert os.readlink(dest / "abs") == "/etc" and (dest / "a.txt").read_bytes() == b"a"
    for members in ([("out", str(outside)), ("out/x", b"evil")], [("../x", b"evil")], [("/abs-x", b"fine")]):
        target = tmp_path / "t"
        target.mkdir(exist_ok=True)
        try:
            unpack(make_tar(tmp_path / "bad.tar", members), target)  # type: ignore[arg-type]
        except (ContextError, tarfile.TarError, OSError):
            pass
        assert not (outside / "x").exists() and not (tmp_path / "x").exists()


def test_copy_sources_stay_in_the_context(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "dir" / "sub").mkdir(parents=True)
    (ctx / "dir" / "sub" / "f").write_text("f")
    (ctx / "dir" / "inner-link").symlink_to("/etc/passwd")
    (ctx / "top").write_text("t")
    (ctx / "up").symlink_to("..")
    (ctx / "etc").symlink_to("/etc")
    plan = plan_copy(ctx, ["dir"], tmp_path / "a.tar")
    with tarfile.open(plan.archive) as tar:
        names = {m.name: m for m in tar.getmembers()}
    assert set(names) == {"sub", "sub/f", "inner-link"} and not plan.single_file
    assert names["inner-link"].issym() and all(m.uid == 0 for m in names.values())
    single = plan_copy(ctx, ["top"], tmp_path / "b.tar")
    assert single.single_file
    (tmp_path / "secret").write_text("s")
    assert not plan_copy(ctx, ["up/ctx/top"], tmp_path / "d.tar").digest == ""  # still inside
    for source in ("up/secret", "etc/passwd", "etc", "../ctx/top", "missing", "*.nothing"):
        with pytest.raises(ContextError):
            plan_copy(ctx, [source], tmp_path / "c.tar")


def test_copy_digest_follows_content_and_mode_not_mtime(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("one")
    first = plan_copy(ctx, ["f"], tmp_path / "1.tar").digest
    os.utime(ctx / "f", (1, 1))
    assert plan_copy(ctx, ["f"], tmp_path / "2.tar").digest == first
    (ctx / "f").chmod(0o700)
    assert plan_copy(ctx, ["f"], tmp_path / "3.tar").digest != first
    (ctx / "f").write_text("two")
    assert plan_copy(ctx, ["f"], tmp_path / "4.tar").digest != first
    assert plan_copy(ctx, ["*"], tmp_path / "5.tar").single_file
