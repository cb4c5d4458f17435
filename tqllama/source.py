"""The pinned llama.cpp source: fetch the sdist that vendors it, verify it, extract it.

llama-cpp-python's source distribution on PyPI ships a complete llama.cpp tree under
`vendor/llama.cpp`; fetching it with pip needs no network access beyond PyPI, and its
sha256 pins every byte of the tree. A verified sdist in the cache makes fetching work
offline; the extracted tree is cached too, so later builds do not touch the sdist.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import click

from tqllama import paths
from tqllama.errors import TqError


@dataclass(frozen=True)
class Pin:
    """One exact upstream source: the PyPI sdist, its hash and the llama.cpp commit inside."""

    package: str
    version: str
    sdist_name: str
    sha256: str
    commit: str

    @property
    def tree_name(self) -> str:
        return f"llama.cpp-{self.commit}"


PIN = Pin(
    package="llama-cpp-python",
    version="0.3.36",
    sdist_name="llama_cpp_python-0.3.36.tar.gz",
    sha256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
    commit="0c1e57098",
)

_VENDOR = PurePosixPath("vendor/llama.cpp")


def warn(message: str) -> None:
    click.echo(f"tqllama: warning: {message}", err=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_files(root: Path) -> Iterator[PurePosixPath]:
    """Relative paths of the files of a source tree, sorted, without `.git` anywhere and
    without top-level `build*` directories (llama.cpp's own .gitignore rule), so that a
    developer's checkout with build trees in it copies and hashes as its sources only."""

    def walk(directory: Path, rel: PurePosixPath) -> Iterator[PurePosixPath]:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            if entry.name == ".git" or (
                not rel.parts and entry.name.startswith("build") and entry.is_dir()
            ):
                continue
            if entry.is_dir(follow_symlinks=False):
                yield from walk(Path(entry.path), rel / entry.name)
            else:
                yield rel / entry.name

    if root.is_dir():
        yield from walk(root, PurePosixPath())


def sdist_path(pin: Pin = PIN) -> Path:
    return paths.cache_dir() / "sdist" / pin.sdist_name


def tree_path(pin: Pin = PIN) -> Path:
    return paths.cache_dir() / "src" / pin.tree_name


def fetch(src: Path | None = None, pin: Pin = PIN) -> Path:
    """Return a pristine llama.cpp tree at the pinned commit, fetching it if needed.

    With `src`, that checkout is used in place (after checking its commit where it can).
    """
    if src is not None:
        return check_checkout(src, pin)
    tree = tree_path(pin)
    if tree.is_dir():
        # Only a complete extraction is ever renamed to this path (see _extract).
        return tree
    _extract(fetch_sdist(pin), tree, pin)
    return tree


def fetch_sdist(pin: Pin = PIN) -> Path:
    """The verified sdist in the cache, downloaded first if it is not there."""
    sdist = sdist_path(pin)
    if not sdist.is_file():
        _download(sdist, pin)
    verify_sdist(sdist, pin)
    return sdist


def verify_sdist(sdist: Path, pin: Pin = PIN) -> None:
    actual = sha256_file(sdist)
    if actual != pin.sha256:
        raise TqError(
            f"checksum mismatch for {sdist}: expected sha256 {pin.sha256}, got {actual}; "
            "delete the file and run `tqllama source fetch` again"
        )


def _download(sdist: Path, pin: Pin) -> None:
    sdist.parent.mkdir(parents=True, exist_ok=True)
    click.echo(f"downloading {pin.package}=={pin.version} (source distribution, ~75 MB) ...",
               err=True)
    # Download into a scratch directory so that an interrupted download never leaves a
    # partial file at the cached path.
    with tempfile.TemporaryDirectory(dir=sdist.parent, prefix=".download-") as scratch:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", f"{pin.package}=={pin.version}", "-d", scratch]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(scratch) / pin.sdist_name
        if proc.returncode != 0 or not got.is_file():
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            reason = lines[-1].strip() if lines else f"pip exited with {proc.returncode}"
            raise TqError(
                f"could not download {pin.package}=={pin.version} with pip ({reason}); "
                f"check the network, or put {pin.sdist_name} in {sdist.parent}, "
                "or pass --src with a llama.cpp checkout"
            )
        os.replace(got, sdist)


def _extract(sdist: Path, tree: Path, pin: Pin) -> None:
    """Extract vendor/llama.cpp from the sdist to `tree`, all or nothing."""
    tree.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=tree.parent, prefix=f".{pin.tree_name}-"))
    try:
        count = _extract_members(sdist, staging, _vendored_path)
        if count == 0:
            raise TqError(f"{sdist} has no {_VENDOR} directory; delete it and fetch again")
        try:
            staging.rename(tree)
        except OSError:
            if not tree.is_dir():  # another process may have finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def extract_package(sdist: Path, dest: Path) -> None:
    """Extract llama-cpp-python itself from the sdist to the new directory `dest`: every
    file but vendor/llama.cpp and the sdist's git metadata (the wheel build needs neither)."""
    dest.mkdir(parents=True)
    if _extract_members(sdist, dest, _package_path) == 0:
        raise TqError(f"{sdist} holds no files; delete it and fetch again")


def _extract_members(sdist: Path, dest: Path,
                     select: Callable[[str], PurePosixPath | None]) -> int:
    """Extract the files whose member names `select` maps to a path under `dest`; count them."""
    count = 0
    with tarfile.open(sdist, "r:gz") as tf:
        for member in tf:
            rel = select(member.name)
            if rel is None or member.isdir():
                continue
            if not member.isfile():
                raise TqError(f"{sdist} holds a non-file entry {member.name}; "
                              "delete it and fetch again")
            target = dest.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with tf.extractfile(member) as fin, target.open("wb") as fout:  # type: ignore[union-attr]
                shutil.copyfileobj(fin, fout)
            os.chmod(target, 0o755 if member.mode & 0o111 else 0o644)
            os.utime(target, (member.mtime, member.mtime))
            count += 1
    return count


def _vendored_path(name: str) -> PurePosixPath | None:
    """`<top>/vendor/llama.cpp/<rel>` -> `<rel>`; None for anything else, anything unsafe, and
    the tree's `.git` file (it points into a submodule store the sdist does not ship)."""
    parts = PurePosixPath(name).parts
    if len(parts) < 4 or PurePosixPath(*parts[1:3]) != _VENDOR:
        return None
    rel = _safe(name, parts[3:])
    return None if rel == PurePosixPath(".git") else rel


def _package_path(name: str) -> PurePosixPath | None:
    """`<top>/<rel>` -> `<rel>` outside vendor/llama.cpp and .git; None otherwise."""
    parts = PurePosixPath(name).parts
    if len(parts) < 2 or parts[1] == ".git" or PurePosixPath(*parts[1:3]) == _VENDOR:
        return None
    return _safe(name, parts[1:])


def _safe(name: str, rel: tuple[str, ...]) -> PurePosixPath | None:
    if any(p in ("", ".", "..") for p in rel) or name.startswith("/"):
        return None
    return PurePosixPath(*rel)


def check_checkout(src: Path, pin: Pin = PIN) -> Path:
    """Accept an existing llama.cpp checkout; refuse one at another commit."""
    src = src.expanduser().resolve()
    if not (src / "CMakeLists.txt").is_file() or not (src / "include" / "llama.h").is_file():
        raise TqError(f"{src} is not a llama.cpp source tree (no CMakeLists.txt and "
                      "include/llama.h); pass the checkout's top directory to --src")
    if not (src / ".git").exists():
        warn(f"cannot check the commit of {src} (no .git); assuming it is {pin.commit}")
        return src
    try:
        proc = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"],
                              capture_output=True, text=True)
    except FileNotFoundError:
        warn(f"cannot check the commit of {src} (git is not installed); "
             f"assuming it is {pin.commit}")
        return src
    head = proc.stdout.strip()
    if proc.returncode != 0 or not head:
        warn(f"cannot check the commit of {src} (git rev-parse failed); "
             f"assuming it is {pin.commit}")
        return src
    if not head.startswith(pin.commit):
        raise TqError(f"{src} is at commit {head[:12]}, but tqllama is pinned to "
                      f"{pin.commit}: check out {pin.commit} there, or drop --src")
    return src
