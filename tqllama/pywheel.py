"""The Python API: a llama-cpp-python wheel whose libllama is the patched tree.

The pinned sdist *is* llama-cpp-python 0.3.36, so the wheel is that sdist with
`vendor/llama.cpp` replaced by the patched tree (`make_tree`, the same one the tools are
built from) and the patches of `patches/python/` applied to its Python package: the
`GGML_TYPE_*` ids of the turbo types and the fields `patches/` adds to the C structs that
the ctypes bindings mirror. pip builds it with scikit-build-core, without build isolation
(the backend comes from the `python` extra, so nothing is downloaded at build time), for
the libraries only: no server, tools, common library or multimodal (mtmd) library.

Layout under the cache, one stable pair per backend, as for the tools:

    build/python-<backend>/src     the sdist tree the wheel is built from; only changed files
                                   are rewritten, so a glue change recompiles what it touches
    build/python-<backend>/build   scikit-build-core's build directory, kept between builds
    wheels/llama-cpp-python/<backend>/<key>/llama_cpp_python-0.3.36+tq<key8>-...whl

The key covers the pin, `ggml-src/` and `patches/` (this package patch included), the
backend and the cmake arguments; the wheel's version carries its first 8 digits, so
`llama_cpp.__version__` names the build it came from and pip reinstalls only on a change.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import click

from tqllama import build, paths, proc, source
from tqllama.errors import TqError
from tqllama.patching import Glue, apply_patch, make_tree

# The wheel holds the libraries only. LLAVA_BUILD is llama-cpp-python's switch for mtmd;
# llama-common serves only mtmd's command-line tools (the package patch stops forcing it on).
_LIBRARY_ONLY = ("-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAVA_BUILD=OFF",
                 "-DLLAMA_BUILD_COMMON=OFF")
# scikit-build-core sets the build type itself and ignores it in CMAKE_ARGS (with a warning).
_BUILD_TYPE = "-DCMAKE_BUILD_TYPE="
_VERSION_LINE = re.compile(r'^__version__ = "([^"+]+)"$', re.MULTILINE)


def package_patches(glue: Glue) -> list[Path]:
    """The patches for llama-cpp-python's own files, applied in name order."""
    return sorted((glue.patches / "python").glob("*.patch"))


def wheel_config(backend: str, cmake_args: Sequence[str] = (),
                 cuda_arch: str | None = None) -> list[str]:
    """The cmake arguments of the wheel: the tools' backend options, libraries only."""
    tools = build.cmake_config_args(backend, False, (), cuda_arch)
    return [*(a for a in tools if not a.startswith(_BUILD_TYPE)), *_LIBRARY_ONLY, *cmake_args]


def wheel_key(config: Sequence[str], backend: str, glue: Glue) -> str:
    return build.cache_key(config=config, tests=False, backend=f"python-{backend}",
                           source=build.source_id(None), glue_hash=build.glue_sha256(glue),
                           pin_commit=source.PIN.commit)


def wheel_dir(backend: str, key: str) -> Path:
    return paths.cache_dir() / "wheels" / "llama-cpp-python" / backend / key[:16]


def build_wheel(backend: str = "cpu", jobs: int | None = None, cmake_args: Sequence[str] = (),
                cuda_arch: str | None = None, *, glue: Glue | None = None) -> Path:
    """Build the llama-cpp-python wheel of the patched tree; a no-op when it is cached."""
    glue = glue or Glue.default()
    config = wheel_config(backend, cmake_args, cuda_arch)
    key = wheel_key(config, backend, glue)
    out = wheel_dir(backend, key)
    if (cached := _cached_wheel(out)) is not None:
        click.echo(f"tqllama: llama-cpp-python wheel is up to date (key {key[:8]})", err=True)
        return cached
    _require_backend()
    with build._build_lock(f"python-{backend}"):
        if (cached := _cached_wheel(out)) is not None:
            return cached
        return _build_wheel(backend, key, config, jobs, glue, out)


def install_wheel(wheel: Path) -> None:
    """Install the wheel into the running interpreter's environment (pip, with its deps)."""
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", str(wheel)]
    pip = subprocess.run(cmd, capture_output=True, text=True)
    if pip.returncode != 0:
        lines = [ln for ln in (pip.stderr + pip.stdout).splitlines() if ln.strip()]
        reason = lines[-1].strip() if lines else f"pip exited with {pip.returncode}"
        raise TqError(f"pip could not install {wheel.name} ({reason}); install it by hand "
                      f"with `pip install {wheel}`")


def _cached_wheel(out: Path) -> Path | None:
    # A wheel is renamed into its key's directory only once complete.
    found = sorted(out.glob("llama_cpp_python-*.whl")) if out.is_dir() else []
    return found[0] if found else None


def _require_backend() -> None:
    if importlib.util.find_spec("scikit_build_core") is None:
        raise TqError("scikit-build-core is not installed, and the wheel is built without "
                      "build isolation: `pip install 'tqllama[python]'`")


def _build_wheel(backend: str, key: str, config: list[str], jobs: int | None, glue: Glue,
                 out: Path) -> Path:
    sdist, pristine = source.fetch_sdist(), source.fetch()
    root = build.backend_dir(f"python-{backend}")
    stable, bdir = root / "src", root / "build"
    bdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".staging-") as scratch:
        fresh = Path(scratch) / "pkg"
        source.extract_package(sdist, fresh)
        make_tree(pristine, fresh / "vendor" / "llama.cpp", glue)
        for patch in package_patches(glue):
            failure = apply_patch(fresh, patch)
            if failure:
                raise TqError(f"patch python/{patch.name} does not apply to llama-cpp-python "
                              f"{source.PIN.version}: {failure}; update it for the pinned sdist")
        _stamp_version(fresh / "llama_cpp" / "__init__.py", key)
        changed = build.sync_tree(fresh, stable)
    click.echo(f"tqllama: llama-cpp-python tree {stable} ({changed} files updated)", err=True)

    # CMakeCache.txt keeps every -D ever passed: start it afresh when the options changed
    record = bdir / "wheel-config.json"
    if not record.is_file() or json.loads(record.read_text()) != config:
        (bdir / "CMakeCache.txt").unlink(missing_ok=True)
    env = {**os.environ, "CMAKE_ARGS": shlex.join(config),
           "CMAKE_BUILD_PARALLEL_LEVEL": str(jobs or os.cpu_count() or 2)}
    log = bdir / "build.log"
    with tempfile.TemporaryDirectory(dir=root, prefix=".wheel-") as scratch:
        # -v streams the backend's cmake and ninja output (the [n/N] progress) to the log
        cmd = [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
               "--disable-pip-version-check", "-w", scratch, "-C", f"build-dir={bdir}",
               "-C", "cmake.build-type=Release", str(stable)]
        click.echo("tqllama: building the llama-cpp-python wheel ...", err=True)
        with proc.BuildSteps() as steps:
            proc.run(cmd, log, what="the wheel build", env=env, on_line=steps.line)
        wheels = list(Path(scratch).glob("llama_cpp_python-*.whl"))
        if len(wheels) != 1:
            raise TqError(f"pip wheel finished without one llama_cpp_python wheel; see {log}")
        record.write_text(json.dumps(config) + "\n")
        out.mkdir(parents=True, exist_ok=True)
        wheel = out / wheels[0].name
        os.replace(wheels[0], wheel)
    for stale in out.parent.iterdir():  # wheels of older glue: one wheel per backend is kept
        if stale != out:
            shutil.rmtree(stale, ignore_errors=True)
    return wheel


def _stamp_version(init: Path, key: str) -> None:
    """`0.3.36` -> `0.3.36+tq<key8>`: a local version naming the glue it was built from."""
    text = init.read_text()
    stamped, n = _VERSION_LINE.subn(lambda m: f'__version__ = "{m[1]}+tq{key[:8]}"', text)
    if n != 1:
        raise TqError(f"{init} has no `__version__ = \"...\"` line to stamp; the pinned sdist "
                      "changed: update tqllama/pywheel.py")
    init.write_text(stamped)
