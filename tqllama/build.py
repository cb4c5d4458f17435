"""Build the patched llama.cpp tools with cmake, cached by a key over everything that matters.

Layout under the cache, one stable pair per backend:

    build/<backend>/src                  the patched tree the build compiles
    build/<backend>/build                cmake build dir: bin/, build.log, manifest.json

A build makes a fresh patched tree in a staging directory, then copies into the stable
tree only the files whose content changed (the others keep their mtimes), so a changed
patch recompiles only what it touches. The manifest is written last and removed first:
if it is there and its key matches, the binaries are what the inputs say.
"""

from __future__ import annotations

import ctypes.util
import fcntl
import filecmp
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import click

from tqllama import paths, proc, source
from tqllama.backends import check_backend
from tqllama.errors import TqError
from tqllama.patching import Glue, make_tree

TOOLS = ("llama-server", "llama-cli", "llama-perplexity", "llama-bench")
TEST_TOOLS = ("test-backend-ops", "test-quantize-fns")
DEFAULT_CUDA_ARCH = "90"
# The sdist ships a shallow clone, so upstream's build number (its commit count) cannot be
# derived; the commit string below identifies the build instead.
BUILD_NUMBER = 0
MIN_FREE_BYTES = 3 * 1024**3
# In the build dir: the options of the last successful configure.
_CONFIGURED = "configured.json"


@dataclass
class Manifest:
    """What a build produced and from what; saved as manifest.json in the build dir."""

    pin: str
    sdist_sha256: str | None  # None when built from a --src checkout
    source: str  # "sdist", or the --src directory
    key: str
    glue_sha256: str  # ggml-src/ and patches/
    backend: str
    tests: bool
    cmake_args: list[str]
    toolchain: dict[str, str]
    binaries: dict[str, str]
    libraries: dict[str, str]
    build_seconds: float
    timestamp: str

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Manifest | None:
        """The manifest at `path`, or None when there is none (or an unreadable one)."""
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def complete(self) -> bool:
        return all(Path(p).is_file() for p in self.binaries.values())


@dataclass(frozen=True)
class DoctorRow:
    check: str
    ok: bool
    detail: str
    required: bool = True


def backend_dir(backend: str) -> Path:
    return paths.cache_dir() / "build" / backend


def manifest_path(backend: str = "cpu") -> Path:
    return backend_dir(backend) / "build" / "manifest.json"


def binary_path(name: str, backend: str = "cpu") -> Path:
    """Path of one built tool; TqError when it has not been built."""
    manifest = Manifest.load(manifest_path(backend))
    if manifest is None:
        raise TqError(f"no {backend} build found: run `tqllama build --backend {backend}` first")
    if name not in manifest.binaries:
        hint = " --tests" if name in TEST_TOOLS else ""
        raise TqError(f"{name} is not among the built tools ({', '.join(manifest.binaries)}); "
                      f"run `tqllama build --backend {backend}{hint}`")
    path = Path(manifest.binaries[name])
    if not path.is_file():
        raise TqError(f"{path} is missing: run `tqllama build --backend {backend}` again")
    return path


# Upstream's AMX matrix kernels (model weights only) die with SIGILL on CPUs that have AMX:
# their tile configuration is built on the stack and the compiler drops the stores
# (ggml-org/llama.cpp#26954). A native build takes them from -march=native; an explicit
# -mno-* flag wins over -march in GCC and Clang, whatever the order.
_NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


def cmake_config_args(backend: str, tests: bool, cmake_args: Sequence[str] = (),
                      cuda_arch: str | None = None) -> list[str]:
    """The configure options that define a build (the build number and commit aside)."""
    check_backend(backend)
    if cuda_arch is not None and backend != "cuda":
        raise TqError("--cuda-arch applies to --backend cuda only: drop it or add "
                      "--backend cuda")
    args = [
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DLLAMA_BUILD_TESTS={'ON' if tests else 'OFF'}",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DLLAMA_USE_PREBUILT_UI=OFF",  # the default downloads the server's web UI
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_OPENSSL=OFF",
        # tools find their libraries beside themselves ($ORIGIN), so a build directory
        # copied to another machine (a GPU machine is often not the build machine) runs
        "-DCMAKE_BUILD_RPATH_USE_ORIGIN=ON",
    ]
    if platform.machine().lower() in ("x86_64", "amd64"):
        args += [f"-DCMAKE_C_FLAGS={_NO_AMX}", f"-DCMAKE_CXX_FLAGS={_NO_AMX}"]
    if backend == "cpu":
        args += ["-DGGML_CUDA=OFF", "-DGGML_METAL=OFF"]
    elif backend == "cuda":
        args += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={cuda_arch or DEFAULT_CUDA_ARCH}",
                 *_cublas_cmake_args()]
        if not cuda_driver_found():
            args.append("-DGGML_CUDA_NO_VMM=ON")
    else:
        args += ["-DGGML_METAL=ON"]
    return args + list(cmake_args)


def cublas_dirs() -> tuple[Path, Path | None] | None:
    """cuBLAS's include dir and, when it is not the CUDA toolkit's own, its lib dir; None
    when there is no cuBLAS.

    ggml-cuda includes cublas_v2.h in every source and links cuBLAS, but some CUDA installs
    (this project's CI machines among them) have nvcc without it. The PyPI wheel
    nvidia-cublas (the `cuda` extra) carries both, under site-packages/nvidia/cu13/.
    """
    nvcc = _find_nvcc()
    if nvcc:
        root = Path(nvcc).resolve().parent.parent
        for include in (root / "include", *sorted(root.glob("targets/*/include"))):
            if (include / "cublas_v2.h").is_file():
                return include, None
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        for header in sorted(Path(base).glob("*/include/cublas_v2.h")):
            lib = header.parent.parent / "lib"
            if any(lib.glob("libcublas.so*")):
                return header.parent, lib
    return None


def cuda_driver_found() -> bool:
    """Whether CMake can link the CUDA driver library (libcuda, or the toolkit's stub of it).

    ggml-cuda links it for its virtual-memory pool (VMM). A build machine with the toolkit
    but no GPU driver (CI, this project's build boxes) may have neither: there the build
    uses GGML_CUDA_NO_VMM=ON, which needs only the runtime, and its tools run on any GPU
    machine (with the ordinary memory pool).
    """
    if ctypes.util.find_library("cuda"):
        return True
    nvcc = _find_nvcc()
    if nvcc is None:
        return False
    root = Path(nvcc).resolve().parent.parent
    stubs = [root / "lib64" / "stubs", root / "lib" / "stubs", *root.glob("targets/*/lib/stubs")]
    return any((d / "libcuda.so").is_file() for d in stubs)


def _cublas_cmake_args() -> list[str]:
    """Point CMake's CUDA::cublas at a cuBLAS outside the toolkit (see cublas_dirs)."""
    found = cublas_dirs()
    if found is None or found[1] is None:
        return []
    include, lib = found
    args = [f"-DCMAKE_CUDA_FLAGS=-I{include}"]
    for name in ("cublas", "cublasLt"):
        # the wheel has only the versioned file (libcublas.so.13), which find_library skips
        libs = sorted(lib.glob(f"lib{name}.so*"))
        if libs:
            args.append(f"-DCUDA_{name}_LIBRARY={libs[0]}")
    return args


def glue_sha256(glue: Glue) -> str:
    digest = hashlib.sha256()
    hash_files(digest, "ggml-src", glue.ggml_src)
    hash_files(digest, "patches", glue.patches)
    return digest.hexdigest()


def source_id(src: Path | None) -> str:
    """The pin's sdist hash, or for a --src checkout a hash of its files."""
    if src is None:
        return f"sdist:{source.PIN.sha256}"
    digest = hashlib.sha256()
    hash_files(digest, "src", src)
    return f"tree:{digest.hexdigest()}"


def cache_key(*, config: Sequence[str], tests: bool, backend: str, source: str,
              glue_hash: str, pin_commit: str) -> str:
    fields = {"pin": pin_commit, "source": source, "glue": glue_hash, "backend": backend,
              "cmake": list(config), "tests": tests}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def check_platform(backend: str, platform: str = sys.platform) -> None:
    """Fail before fetching or configuring anything when `backend` cannot build here."""
    if backend == "metal" and platform != "darwin":
        raise TqError(f"--backend metal needs macOS (Apple's Metal compiler), not {platform}: "
                      "build on a Mac, where ci/metal-check.sh builds it and runs the checks")


def build(backend: str = "cpu", jobs: int | None = None, tests: bool = False,
          cmake_args: Sequence[str] = (), src: Path | None = None,
          cuda_arch: str | None = None, *, glue: Glue | None = None) -> Manifest:
    """Build the tools for `backend`; a no-op when nothing that matters has changed."""
    check_platform(backend)
    glue = glue or Glue.default()
    config = cmake_config_args(backend, tests, cmake_args, cuda_arch)
    src = src.expanduser().resolve() if src is not None else None
    sid, ghash = source_id(src), glue_sha256(glue)

    def key_for(with_tests: bool) -> str:
        cfg = cmake_config_args(backend, with_tests, cmake_args, cuda_arch)
        return cache_key(config=cfg, tests=with_tests, backend=backend, source=sid,
                         glue_hash=ghash, pin_commit=source.PIN.commit)

    key = key_for(tests)
    # A build with the test tools also serves a request without them.
    reusable = {key} if tests else {key, key_for(True)}
    current = _up_to_date(backend, reusable)
    if current is not None:
        return current
    with _build_lock(backend):
        # Another process may have built the same thing while this one waited.
        current = _up_to_date(backend, reusable)
        if current is not None:
            return current
        return _build(backend, key, config, ghash, tests, jobs, src, glue)


def _up_to_date(backend: str, keys: set[str]) -> Manifest | None:
    current = Manifest.load(manifest_path(backend))
    if current is not None and current.key in keys and current.complete():
        click.echo(f"tqllama: {backend} build is up to date (key {current.key[:8]})", err=True)
        return current
    return None


@contextmanager
def _build_lock(backend: str) -> Iterator[None]:
    """One build per backend directory at a time, across processes (tests run in parallel
    by several people share the default cache)."""
    root = backend_dir(backend)
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            click.echo(f"tqllama: waiting for another {backend} build to finish ...", err=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build(backend: str, key: str, config: list[str], ghash: str, tests: bool,
           jobs: int | None, src: Path | None, glue: Glue) -> Manifest:
    toolchain = _toolchain(backend)
    pristine = source.fetch(src)
    root = backend_dir(backend)
    stable, bdir = root / "src", root / "build"
    bdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=root, prefix=".staging-") as scratch:
        fresh = Path(scratch) / "tree"
        make_tree(pristine, fresh, glue)  # a patch that fails leaves the last build usable
        # From here on the binaries no longer match the manifest until it is rewritten.
        manifest_path(backend).unlink(missing_ok=True)
        changed = sync_tree(fresh, stable)
    click.echo(f"tqllama: source tree {stable} ({changed} files updated)", err=True)

    log = bdir / "build.log"
    targets = list(TOOLS) + (list(TEST_TOOLS) if tests else [])
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    defines = [*config, f"-DLLAMA_BUILD_NUMBER={BUILD_NUMBER}",
               f"-DLLAMA_BUILD_COMMIT={source.PIN.commit}-tq{key[:8]}"]
    configure = ["cmake", "-S", str(stable), "-B", str(bdir), *generator, *defines]
    compile_ = ["cmake", "--build", str(bdir), "--config", "Release",
                "-j", str(jobs or os.cpu_count() or 2), "--target", *targets]
    _forget_stale_configuration(bdir, config, ninja=bool(generator))
    click.echo("tqllama: configuring with cmake ...", err=True)
    proc.run(configure, log, what="cmake configure")
    (bdir / _CONFIGURED).write_text(json.dumps(config) + "\n")
    click.echo(f"tqllama: building {', '.join(targets)} ...", err=True)
    with proc.BuildSteps() as steps:
        proc.run(compile_, log, append=True, what="the build", on_line=steps.line)

    binaries = {t: str(bdir / "bin" / t) for t in targets}
    missing = [t for t, p in binaries.items() if not Path(p).is_file()]
    if missing:
        raise TqError(f"the build finished without {', '.join(missing)}; see {log}")
    manifest = Manifest(
        pin=source.PIN.commit,
        sdist_sha256=source.PIN.sha256 if src is None else None,
        source="sdist" if src is None else str(src),
        key=key,
        glue_sha256=ghash,
        backend=backend,
        tests=tests,
        cmake_args=defines,
        toolchain=toolchain,
        binaries=binaries,
        libraries=_libraries(bdir / "bin"),
        build_seconds=round(time.monotonic() - started, 1),
        timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    manifest.save(manifest_path(backend))
    return manifest


def _forget_stale_configuration(bdir: Path, config: list[str], ninja: bool) -> None:
    """Drop cmake's cache when it would keep settings the new arguments no longer give.

    CMakeCache.txt remembers every -D ever passed, so a removed --cmake-arg would stay in
    effect; values of the same options (LLAMA_BUILD_TESTS ON/OFF) are simply updated.
    The objects stay, so ninja still rebuilds only what the new configuration changes.
    A directory made with another generator cannot be reused at all.
    """
    cache = bdir / "CMakeCache.txt"
    if not cache.exists():
        return
    generator = re.search(r"^CMAKE_GENERATOR:INTERNAL=(.*)$", cache.read_text(), re.MULTILINE)
    if generator and (generator[1] == "Ninja") != ninja:
        shutil.rmtree(bdir / "CMakeFiles", ignore_errors=True)
        cache.unlink()
        return
    record = bdir / _CONFIGURED
    previous = json.loads(record.read_text()) if record.is_file() else None
    if previous is None or _option_names(previous) != _option_names(config):
        cache.unlink()


def _option_names(args: Sequence[str]) -> list[str]:
    return [a.split("=", 1)[0] if a.startswith("-D") else a for a in args]


def sync_tree(new: Path, stable: Path) -> int:
    """Make `stable` hold exactly the files of `new`, rewriting only changed files.

    Unchanged files keep their mtimes, so the build system recompiles only what changed.
    Returns the number of files written or removed.
    """
    wanted = set(source.tree_files(new))
    changed = 0
    for rel in sorted(wanted):
        src, dst = new / rel, stable / rel
        if dst.is_file() and not dst.is_symlink() and filecmp.cmp(src, dst, shallow=False):
            if (src.stat().st_mode & 0o777) != (dst.stat().st_mode & 0o777):
                shutil.copymode(src, dst)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        shutil.copy(src, dst, follow_symlinks=False)  # content and mode; mtime is now
        changed += 1
    for rel in set(source.tree_files(stable)) - wanted:
        (stable / rel).unlink()
        changed += 1
    for directory, _, _ in os.walk(stable, topdown=False):  # children before parents
        if directory != str(stable) and not os.listdir(directory):
            os.rmdir(directory)
    return changed


def doctor(backend: str = "cpu") -> list[DoctorRow]:
    """Check the tools a build needs; `required` marks what `backend` cannot do without."""
    rows = []
    for check, finder, install in (
        ("cmake", _find_cmake, "install CMake 3.14+"),
        ("C compiler", _find_cc, "install gcc or clang"),
        ("C++ compiler", _find_cxx, "install g++ or clang++"),
        ("git", lambda: shutil.which("git"), "install git (patches are applied with it)"),
    ):
        exe = finder()
        rows.append(DoctorRow(check, bool(exe), _version(exe) if exe else install))
    ninja = shutil.which("ninja")
    rows.append(DoctorRow("ninja", bool(ninja),
                          _version(ninja) if ninja else "optional: install it for faster "
                          "builds and a progress counter", required=False))
    nvcc = _find_nvcc()
    rows.append(DoctorRow("nvcc", bool(nvcc),
                          _version(nvcc) if nvcc else "needed for --backend cuda: install "
                          "the CUDA toolkit", required=backend == "cuda"))
    cublas = cublas_dirs()
    rows.append(DoctorRow("cuBLAS", cublas is not None,
                          str(cublas[0]) if cublas else "needed for --backend cuda: "
                          "pip install -e '.[cuda]' (the nvidia-cublas wheel)",
                          required=backend == "cuda"))
    cache = paths.cache_dir()
    free = shutil.disk_usage(cache).free
    rows.append(DoctorRow("free disk", free >= MIN_FREE_BYTES,
                          f"{free / 1024**3:.1f} GB free in {cache} (a build needs 3 GB)"))
    sdist, tree = source.sdist_path(), source.tree_path()
    rows.append(DoctorRow("pinned source", tree.is_dir() or sdist.is_file(),
                          str(tree) if tree.is_dir() else str(sdist) if sdist.is_file()
                          else "not fetched yet: the first build downloads it (~75 MB)",
                          required=False))
    return rows


def _toolchain(backend: str) -> dict[str, str]:
    """Versions of the tools the build needs; TqError naming what to install if one is missing."""
    cmake = _find_cmake()
    if not cmake:
        raise TqError("cmake not found: install CMake 3.14+ (e.g. `apt install cmake`, "
                      "`brew install cmake` or `pip install cmake`)")
    cc, cxx = _find_cc(), _find_cxx()
    if not cc or not cxx:
        raise TqError("no C/C++ compiler found: install gcc and g++ or clang "
                      "(e.g. `apt install build-essential`), or set CC and CXX")
    versions = {"cmake": _version(cmake), "cc": _version(cc), "c++": _version(cxx)}
    if shutil.which("ninja"):
        versions["ninja"] = _version("ninja")
    if backend == "cuda":
        nvcc = _find_nvcc()
        if not nvcc:
            raise TqError("nvcc not found: install the CUDA toolkit and put nvcc on PATH "
                          "(or set CUDACXX)")
        versions["nvcc"] = _version(nvcc)
        if cublas_dirs() is None:
            raise TqError("cuBLAS not found (ggml-cuda links it; this CUDA toolkit has none): "
                          "pip install -e '.[cuda]' (the nvidia-cublas wheel)")
    return versions


def _find_cmake() -> str | None:
    return shutil.which("cmake")


def _find_cc() -> str | None:
    return _first_tool(os.environ.get("CC"), "cc", "gcc", "clang")


def _find_cxx() -> str | None:
    return _first_tool(os.environ.get("CXX"), "c++", "g++", "clang++")


def _find_nvcc() -> str | None:
    return _first_tool(os.environ.get("CUDACXX"), "nvcc")


def _first_tool(*names: str | None) -> str | None:
    for name in names:
        if name and (found := shutil.which(name)):
            return found
    return None


def _version(exe: str) -> str:
    """One line naming the tool's version (nvcc puts it on its last line)."""
    try:
        result = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = [ln.strip() for ln in result.stdout.splitlines() if ln.strip()]
    if not lines:
        return "unknown"
    return lines[-1] if Path(exe).name == "nvcc" else lines[0]


def hash_files(digest: hashlib._Hash, label: str, root: Path) -> None:
    """Feed every file of the tree `root` (path under `label`, size, bytes) into `digest`."""
    for rel in source.tree_files(root):
        data = (root / rel).read_bytes()
        digest.update(f"{label}/{rel}\0{len(data)}\0".encode())
        digest.update(data)


def _libraries(bin_dir: Path) -> dict[str, str]:
    """Shared libraries by file name (libggml-base.so, ...), for ctypes users."""
    found = [p for pattern in ("lib*.so", "lib*.dylib", "*.dll") for p in bin_dir.glob(pattern)]
    return {p.name: str(p) for p in sorted(found)}
