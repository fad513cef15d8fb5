"""Fetch Debian apt index files and .deb packages into a private cache, system untouched.

apt reads the machine's sources.list but writes only under `cache_dir`: its lists dir
(`Dir::State::Lists`) and archive cache (`Dir::Cache`) are pointed there, and
`Debug::NoLocking` keeps it off the system's lock files. Files already in the cache are
reused unless `refresh` is set.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from llm_pipeline.errors import PipelineError

APT_HELPER = "/usr/lib/apt/apt-helper"
# "<host>_<path>_dists_<suite>_main_..." : the suite is the part after "_dists_".
_SUITE = re.compile(r"_dists_([^_]+)_main_")


@dataclass(frozen=True)
class IndexFiles:
    packages: list[Path]  # main/binary-<arch>/Packages* (compressed as apt left them)
    translations: list[Path]  # main/i18n/Translation-<lang>* for each requested language


def _apt_options(cache_dir: Path) -> list[str]:
    return [
        "-o",
        f"Dir::State::Lists={cache_dir / 'lists'}",
        "-o",
        f"Dir::Cache={cache_dir / 'apt-cache'}",
        "-o",
        "Debug::NoLocking=1",
    ]


_TAR_CHATTER = ("tar: Removing leading", "tar: Exiting with failure")


def run_command(cmd: list[str], cwd: Path | None = None) -> str:
    """Run a command; on failure raise PipelineError naming it and its last stderr line."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise PipelineError(
            f"`{cmd[0]}` not found: the Debian sources need apt and dpkg "
            "(a Debian/Ubuntu machine); use a `local` source instead"
        ) from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        # dpkg-deb's last line is "tar subprocess returned error": the tar line before names the entry
        entry = [ln for ln in lines if ln.startswith("tar: ") and not ln.startswith(_TAR_CHATTER)]
        last = entry[0] if entry else lines[-1] if lines else "(no stderr)"
        raise PipelineError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {last}")
    return proc.stdout


def _prepare_dirs(cache_dir: Path) -> None:
    for sub in ("lists/partial", "apt-cache/archives/partial", "debs"):
        (cache_dir / sub).mkdir(parents=True, exist_ok=True)


def _is_main_suite(path: Path) -> bool:
    # Only the release suite itself ("bookworm"), not "bookworm-updates"/"-security"/"-backports":
    # those mostly repeat the release's descriptions, and the release's two files change only
    # with point releases, which keeps the corpus reproducible (sha256 in the manifest).
    match = _SUITE.search(path.name)
    return match is not None and "-" not in match.group(1)


def find_index_files(lists_dir: Path, languages: tuple[str, ...] = ("en",)) -> IndexFiles:
    """Main-suite Packages and Translation files that apt left in `lists_dir`."""
    return select_index_files([p for p in lists_dir.glob("*") if p.is_file()], languages)


def select_index_files(paths: list[Path], languages: tuple[str, ...] = ("en",)) -> IndexFiles:
    """The main-suite Packages and Translation-<lang> files among `paths` (apt's file names)."""
    names = sorted((p for p in paths if _is_main_suite(p)), key=lambda p: p.name)
    packages = [p for p in names if fnmatch.fnmatch(p.name, "*_main_binary-*_Packages*")]
    translations = [
        p for lang in languages for p in names if fnmatch.fnmatch(p.name, f"*_main_i18n_Translation-{lang}*")
    ]
    return IndexFiles(packages, translations)


def fetch_index_files(cache_dir: str | Path, languages: tuple[str, ...] = ("en",), refresh: bool = False) -> IndexFiles:
    """`apt-get update` into `<cache_dir>/lists` (skipped when the files are already there)."""
    cache_dir = Path(cache_dir).resolve()
    found = find_index_files(cache_dir / "lists", languages)
    if not refresh and found.packages and len(found.translations) >= len(languages):
        return found
    _prepare_dirs(cache_dir)
    run_command(["apt-get", "update", *_apt_options(cache_dir), "-o", f"Acquire::Languages={','.join(languages)}"])
    found = find_index_files(cache_dir / "lists", languages)
    if not found.packages or len(found.translations) < len(languages):
        raise PipelineError(
            f"apt-get update left no main-suite Packages/Translation-"
            f"{'/'.join(languages)} files in {cache_dir / 'lists'}: "
            "check that /etc/apt sources list a Debian suite with `main`"
        )
    return found


@contextlib.contextmanager
def open_index(path: str | Path) -> Iterator[IO[str]]:
    """Stream an index file decompressed (any compression apt uses) via `apt-helper cat-file`."""
    cmd = [APT_HELPER, "cat-file", str(path)]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError(f"`{APT_HELPER}` not found: reading apt index files needs apt") from None
    assert proc.stdout is not None and proc.stderr is not None  # both are PIPEs
    with proc:
        yield proc.stdout
        stderr = proc.stderr.read()
    if proc.returncode != 0:
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        raise PipelineError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {lines[-1] if lines else '(no stderr)'}"
        )


def fetch_deb(package: str, cache_dir: str | Path, refresh: bool = False) -> Path:
    """`apt-get download PACKAGE` into `<cache_dir>/debs`; returns the .deb path."""
    cache_dir = Path(cache_dir).resolve()
    debs = cache_dir / "debs"
    existing = sorted(debs.glob(f"{package}_*.deb"))
    if existing and not refresh:
        return existing[-1]
    fetch_index_files(cache_dir)  # apt-get download needs the lists
    _prepare_dirs(cache_dir)
    for old in existing:
        old.unlink()
    run_command(["apt-get", "download", *_apt_options(cache_dir), package], cwd=debs)
    downloaded = sorted(debs.glob(f"{package}_*.deb"))
    if not downloaded:
        raise PipelineError(f"`apt-get download {package}` wrote no {package}_*.deb in {debs}")
    return downloaded[-1]


def extract_deb(deb: Path, target: Path, refresh: bool = False) -> Path:
    """`dpkg-deb -x` into `target` (once; a marker file records which .deb it holds).

    No entry may escape `target`: dpkg-deb's tar refuses `..` members and writing through a
    symlink, and strips a leading `/`, but keeps a symlink that points outside (read through
    later, it would feed any file of the machine to the pipeline); so every extracted entry is
    checked to resolve inside `target`, and a package that fails either check is refused whole
    (the folder removed) in one line naming the .deb and the entry."""
    marker = target / ".extracted-from"
    if not refresh and marker.is_file() and marker.read_text() == deb.name:
        return target
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    try:
        run_command(["dpkg-deb", "-x", str(deb), str(target)])
        check_inside(target, deb)
    except PipelineError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    marker.write_text(deb.name)
    return target


def check_inside(root: Path, archive: Path) -> None:
    """Raise unless every entry under `root` (symlinks followed) resolves inside `root`."""
    base = root.resolve()
    for folder, dirs, files in os.walk(root):  # symlinks to folders are listed, not entered
        for name in [*dirs, *files]:
            entry = Path(folder) / name
            if not entry.resolve().is_relative_to(base):
                link = f" -> {os.readlink(entry)}" if entry.is_symlink() else ""
                raise PipelineError(
                    f"{archive}: entry {entry.relative_to(root)}{link} points outside {root}; "
                    "the package is refused (not extracted)"
                )
