"""Crafted .debs whose entries try to leave the folder extract_deb unpacks them into.

Each is a real ar archive (debian-binary, control.tar.gz, data.tar.gz built with tarfile),
unpacked by the real `dpkg-deb -x`. What dpkg-deb 1.21 (GNU tar) does on its own: refuses a
`../` member and writing through a symlink (exit 2, but leaves the symlink behind), strips a
leading `/` (the file lands inside), keeps a symlink that points outside (exit 0). extract_deb
refuses the package in each refused or outside-pointing case and removes what was unpacked.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from llm_pipeline.data.sources.apt_sources import extract_deb
from llm_pipeline.errors import PipelineError

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian/Ubuntu)")

CONTROL = b"Package: crafted\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: t\n"


def tar_gz(entries: list[tuple[str, str, bytes | str]]) -> bytes:
    """(name, kind: file|dir|symlink, data or link target) -> a .tar.gz, names kept as given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = 1_700_000_000, 0o755 if kind == "dir" else 0o644
            if kind == "file":
                assert isinstance(data, bytes)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.DIRTYPE if kind == "dir" else tarfile.SYMTYPE
                info.linkname = data if isinstance(data, str) else ""
                tar.addfile(info)
    return buf.getvalue()


def write_deb(path: Path, data: list[tuple[str, str, bytes | str]]) -> Path:
    """An ar archive as dpkg-deb reads it."""
    members = [
        ("debian-binary", b"2.0\n"),
        ("control.tar.gz", tar_gz([("./", "dir", b""), ("./control", "file", CONTROL)])),
        ("data.tar.gz", tar_gz([("./", "dir", b""), *data])),
    ]
    out = b"!<arch>\n"
    for name, body in members:
        out += f"{name:<16}{1700000000:<12}{0:<6}{0:<6}{0o100644:<8o}{len(body):<10}`\n".encode() + body
        out += b"\n" if len(body) % 2 else b""
    path.write_bytes(out)
    return path


@pytest.fixture
def places(tmp_path):
    """(folder the .deb is extracted into, a folder outside it that must stay empty)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    return tmp_path / "cache" / "pkg", outside


def assert_refused(deb: Path, target: Path, outside: Path, *words: str) -> None:
    with pytest.raises(PipelineError) as caught:
        extract_deb(deb, target)
    message = str(caught.value)
    assert "\n" not in message and str(deb) in message, message
    assert all(word in message for word in words), message
    assert not target.exists()  # nothing of the refused package is kept
    assert list(outside.iterdir()) == []
    assert not (outside.parent / "escape.txt").exists()


def test_a_dotdot_entry_is_refused_and_lands_nowhere(tmp_path, places):
    target, outside = places
    deb = write_deb(tmp_path / "dotdot.deb", [("./../escape.txt", "file", b"x\n"), ("./ok.txt", "file", b"ok\n")])
    assert_refused(deb, target, outside, "../escape.txt")
    assert not (target.parent / "escape.txt").exists()


def test_writing_through_a_symlink_that_points_outside_is_refused(tmp_path, places):
    target, outside = places
    for name, link in (("absolute", str(outside)), ("relative", "../../outside")):
        deb = write_deb(tmp_path / f"{name}.deb", [("./link", "symlink", link), ("./link/x.txt", "file", b"x\n")])
        assert_refused(deb, target, outside, "link/x.txt")


def test_a_symlink_pointing_outside_is_refused_even_when_dpkg_deb_accepts_it(tmp_path, places):
    target, outside = places
    (outside.parent / "secret").write_text("not corpus text")
    deb = write_deb(tmp_path / "link.deb", [("./usr", "dir", b""), ("./usr/data", "symlink", "../../../secret")])
    assert_refused(deb, target, outside, "usr/data -> ../../../secret", "points outside")


def test_an_absolute_entry_lands_inside_the_target(tmp_path, places):
    target, outside = places
    deb = write_deb(tmp_path / "abs.deb", [(f"{outside}/abs.txt", "file", b"x\n")])
    root = extract_deb(deb, target)
    assert list(outside.iterdir()) == []
    assert (root / str(outside).lstrip("/") / "abs.txt").read_text() == "x\n"


def test_a_symlink_inside_the_package_is_kept(tmp_path, places):
    target, _ = places
    deb = write_deb(
        tmp_path / "fine.deb",
        [("./usr", "dir", b""), ("./usr/real.txt", "file", b"text\n"), ("./usr/alias.txt", "symlink", "real.txt")],
    )
    root = extract_deb(deb, target)
    assert (root / "usr" / "alias.txt").read_text() == "text\n"
