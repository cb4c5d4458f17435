"""Cache keys, the stable-tree sync, the manifest, and builds of the small fake tree.

The tests marked slow run cmake and a compiler on tqlab/fake_llama.py's tree (seconds);
the real tree is built once per session in tests/test_build_integration.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tqlab.fake_llama import GGML_C, MAIN_C, write_tree
from tqllama import build as build_mod
from tqllama.build import (
    Manifest,
    binary_path,
    build,
    cache_key,
    cmake_config_args,
    glue_sha256,
    source_id,
    sync_tree,
)
from tqllama.cli import cli
from tqllama.errors import TqError
from tqllama.patching import Glue


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("TQLLAMA_CACHE", str(root))
    return root


@pytest.fixture
def glue(tmp_path: Path) -> Glue:
    glue = Glue(tmp_path / "glue" / "ggml-src", tmp_path / "glue" / "patches")
    (glue.ggml_src / "ggml/src").mkdir(parents=True)
    (glue.ggml_src / "ggml/src/ggml-turbo.c").write_text("/* turbo */\n")
    glue.patches.mkdir()
    (glue.patches / "0001-a.patch").write_text("diff --git a/x b/x\n")
    (glue.patches / "series").write_text("0001-a.patch\n")
    return glue


def key(glue: Glue, backend: str = "cpu", tests: bool = False, args: tuple[str, ...] = (),
        src: Path | None = None) -> str:
    return cache_key(config=cmake_config_args(backend, tests, args), tests=tests,
                     backend=backend, source=source_id(src), glue_hash=glue_sha256(glue),
                     pin_commit="0c1e57098")


def test_key_follows_patches_and_ggml_src_but_not_unrelated_files(
    glue: Glue, tmp_path: Path
) -> None:
    base = key(glue)
    (tmp_path / "glue" / "README").write_text("unrelated")
    assert key(glue) == base
    (glue.patches / "0001-a.patch").write_text("diff --git a/x b/x\n# changed\n")
    changed_patch = key(glue)
    assert changed_patch != base
    (glue.ggml_src / "ggml/src/ggml-turbo.c").rename(glue.ggml_src / "ggml/src/ggml-turbo2.c")
    assert key(glue) != changed_patch


def test_key_follows_backend_tests_cmake_args_and_source(glue: Glue, tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "llama.cpp")
    keys = {key(glue), key(glue, backend="cuda"), key(glue, tests=True),
            key(glue, args=("-DGGML_NATIVE=OFF",)), key(glue, src=tree)}
    assert len(keys) == 5
    # A --src tree is identified by its sources, not by .git or build directories in it.
    (tree / "build-x").mkdir()
    (tree / "build-x/junk.o").write_text("x")
    (tree / ".git").write_text("gitdir: elsewhere\n")
    assert key(glue, src=tree) in keys
    (tree / "tools/main.c").write_text("changed")
    assert key(glue, src=tree) not in keys


def test_configure_arguments_per_backend() -> None:
    cpu = cmake_config_args("cpu", False)
    assert "-DGGML_CUDA=OFF" in cpu and "-DLLAMA_BUILD_TESTS=OFF" in cpu
    assert "-DLLAMA_USE_PREBUILT_UI=OFF" in cpu and "-DLLAMA_CURL=OFF" in cpu
    assert "-DCMAKE_CUDA_ARCHITECTURES=90" in cmake_config_args("cuda", True)
    assert "-DCMAKE_CUDA_ARCHITECTURES=89" in cmake_config_args("cuda", True, (), "89")
    assert "-DGGML_METAL=ON" in cmake_config_args("metal", False)
    assert cmake_config_args("cpu", True, ("-DX=1",))[-1] == "-DX=1"
    with pytest.raises(TqError, match="unknown backend 'rocm'"):
        cmake_config_args("rocm", False)
    with pytest.raises(TqError, match="--cuda-arch applies to --backend cuda only"):
        cmake_config_args("cpu", False, (), "90")


def test_sync_rewrites_only_changed_files(tmp_path: Path) -> None:
    new, stable = write_tree(tmp_path / "new"), tmp_path / "stable"
    assert sync_tree(new, stable) == len(list(p for p in new.rglob("*") if p.is_file()))
    old = time.time() - 1000
    for path in stable.rglob("*"):
        os.utime(path, (old, old))
    (new / "tools/main.c").write_text("changed\n")
    (new / "ggml/src/ggml.c").unlink()
    (new / "ggml/src/ggml-new.c").write_text("new\n")
    (new / "include/llama.h").unlink()
    (new / "include").rmdir()

    assert sync_tree(new, stable) == 4
    assert (stable / "tools/main.c").read_text() == "changed\n"
    assert (stable / "tools/main.c").stat().st_mtime > old + 500
    assert (stable / "ggml/include/ggml.h").stat().st_mtime == old  # untouched
    assert (stable / "ggml/src/ggml-new.c").is_file()
    assert not (stable / "ggml/src/ggml.c").exists() and not (stable / "include").exists()
    assert sync_tree(new, stable) == 0


def test_binary_path_without_a_build_says_to_build(cache: Path) -> None:
    with pytest.raises(TqError, match="no cpu build found: run `tqllama build"):
        binary_path("llama-server")
    result = CliRunner().invoke(cli, ["bin", "llama-server", "--backend", "cuda"])
    assert result.exit_code == 1
    assert result.output == ("tqllama: error: no cuda build found: run "
                             "`tqllama build --backend cuda` first\n")


def test_doctor_checks_the_toolchain(cache: Path) -> None:
    rows = {row.check: row for row in build_mod.doctor("cuda")}
    assert {"cmake", "C compiler", "C++ compiler", "git", "ninja", "nvcc", "free disk"} <= set(rows)
    assert rows["nvcc"].required and not rows["ninja"].required
    assert rows["cmake"].ok and rows["cmake"].detail.startswith("cmake version")
    assert not {row.check: row for row in build_mod.doctor("cpu")}["nvcc"].required


def test_missing_cmake_is_one_line_saying_what_to_install(
    cache: Path, tmp_path: Path, glue: Glue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(TqError, match=r"cmake not found: install CMake"):
        build(src=write_tree(tmp_path / "llama.cpp"), glue=glue)


# --- real cmake builds of the fake tree ------------------------------------------------

PATCH_43 = """\
diff --git a/ggml/src/ggml.c b/ggml/src/ggml.c
--- a/ggml/src/ggml.c
+++ b/ggml/src/ggml.c
@@ -3,5 +3,5 @@
 int ggml_answer(void) {
     int a = 40;
-    int b = 2;
+    int b = 3;
     return a + b;
 }
"""


@pytest.fixture
def fake(tmp_path: Path, cache: Path) -> tuple[Path, Glue]:
    src = write_tree(tmp_path / "llama.cpp")
    glue = Glue(tmp_path / "ggml-src", tmp_path / "patches")
    glue.patches.mkdir()
    return src, glue


def run(binary: str) -> str:
    return subprocess.run([binary], check=True, capture_output=True, text=True).stdout


@pytest.mark.slow
def test_build_writes_manifest_and_second_build_is_a_noop(fake: tuple[Path, Glue]) -> None:
    src, glue = fake
    manifest = build(src=src, glue=glue, jobs=2)
    assert manifest == Manifest.load(build_mod.manifest_path("cpu"))
    assert manifest.pin == "0c1e57098" and manifest.backend == "cpu" and not manifest.tests
    assert manifest.sdist_sha256 is None and manifest.source == str(src.resolve())
    assert f"-DLLAMA_BUILD_COMMIT=0c1e57098-tq{manifest.key[:8]}" in manifest.cmake_args
    assert "-DLLAMA_BUILD_NUMBER=0" in manifest.cmake_args
    assert {"cmake", "cc", "c++"} <= set(manifest.toolchain)
    assert set(manifest.binaries) == {"llama-server", "llama-cli", "llama-perplexity",
                                      "llama-bench"}
    assert Path(manifest.libraries["libggml-base.so"]).is_file()
    assert binary_path("llama-cli") == Path(manifest.binaries["llama-cli"])
    version = f"version: 0c1e57098-tq{manifest.key[:8]} answer 42\n"
    assert run(manifest.binaries["llama-cli"]) == version
    with pytest.raises(TqError, match="run `tqllama build --backend cpu --tests`"):
        binary_path("test-backend-ops")

    log = build_mod.backend_dir("cpu") / "build" / "build.log"
    log_mtime = log.stat().st_mtime
    started = time.monotonic()
    assert build(src=src, glue=glue, jobs=2) == manifest
    assert time.monotonic() - started < 10
    assert log.stat().st_mtime == log_mtime  # cmake did not even run

    with_tests = build(src=src, glue=glue, jobs=2, tests=True)
    assert with_tests.key != manifest.key and with_tests.tests
    assert Path(binary_path("test-quantize-fns")).is_file()
    # The test tools' build also serves a build without them.
    assert build(src=src, glue=glue, jobs=2) == with_tests


@pytest.mark.slow
def test_changed_patch_rebuilds_incrementally(fake: tuple[Path, Glue]) -> None:
    src, glue = fake
    first = build(src=src, glue=glue, jobs=2)
    tree = build_mod.backend_dir("cpu") / "src"
    main_mtime = (tree / "tools/main.c").stat().st_mtime

    (glue.patches / "0001-answer.patch").write_text(PATCH_43)
    (glue.patches / "series").write_text("0001-answer.patch\n")
    second = build(src=src, glue=glue, jobs=2)
    assert second.key != first.key
    assert (tree / "ggml/src/ggml.c").read_text() == GGML_C.replace("b = 2", "b = 3")
    assert (tree / "tools/main.c").stat().st_mtime == main_mtime
    log = (build_mod.backend_dir("cpu") / "build" / "build.log").read_text()
    assert "ggml.c.o" in log
    assert "main.c.o" not in log  # only the patched file was recompiled (and relinked)
    assert run(second.binaries["llama-bench"]).endswith("answer 43\n")


@pytest.mark.slow
def test_patch_that_fails_keeps_the_previous_build(fake: tuple[Path, Glue]) -> None:
    src, glue = fake
    first = build(src=src, glue=glue, jobs=2)
    (glue.patches / "bad.patch").write_text(PATCH_43.replace("int a = 40;", "int a = 41;"))
    (glue.patches / "series").write_text("bad.patch\n")
    with pytest.raises(TqError, match=r"patch bad\.patch does not apply: hunk #1 of ggml/src"):
        build(src=src, glue=glue, jobs=2)
    assert binary_path("llama-cli") == Path(first.binaries["llama-cli"])
    assert (build_mod.backend_dir("cpu") / "src/ggml/src/ggml.c").read_text() == GGML_C


@pytest.mark.slow
def test_cmake_failure_shows_the_log_tail_and_path(fake: tuple[Path, Glue]) -> None:
    src, glue = fake
    (src / "CMakeLists.txt").write_text("cmake_minimum_required(VERSION 3.14)\nproject(x C)\n"
                                        'message(FATAL_ERROR "no turbo for you")\n')
    with pytest.raises(TqError) as err:
        build(src=src, glue=glue, jobs=2)
    message = str(err.value)
    assert message.startswith("cmake configure failed: ")
    assert "no turbo for you" in message and "\n" not in message
    assert f"full log: {build_mod.backend_dir('cpu') / 'build' / 'build.log'}" in message
    with pytest.raises(TqError, match="no cpu build found"):
        binary_path("llama-cli")


@pytest.mark.slow
def test_compile_failure_names_the_error(fake: tuple[Path, Glue]) -> None:
    src, glue = fake
    (src / "tools/main.c").write_text(MAIN_C.replace("return 0;", "return undefined_thing;"))
    with pytest.raises(TqError, match=r"the build failed: .*undefined_thing.*full log: "):
        build(src=src, glue=glue, jobs=2)


@pytest.mark.slow
def test_concurrent_build_waits_for_the_running_one(fake: tuple[Path, Glue]) -> None:
    src, glue = fake
    results: list[Manifest] = []
    with build_mod._build_lock("cpu"):
        waiting = threading.Thread(target=lambda: results.append(build(src=src, glue=glue)))
        waiting.start()
        waiting.join(timeout=2)
        assert waiting.is_alive() and not results  # blocked on the lock
    waiting.join(timeout=120)
    assert results and Path(results[0].binaries["llama-cli"]).is_file()


@pytest.mark.slow
def test_removed_cmake_arg_stops_applying(fake: tuple[Path, Glue]) -> None:
    src, glue = fake
    with_arg = build(src=src, glue=glue, cmake_args=("-DFAKE_SUFFIX=-extra",))
    assert "-extra answer" in run(with_arg.binaries["llama-cli"])
    without = build(src=src, glue=glue)
    assert "-extra" not in run(without.binaries["llama-cli"])


@pytest.mark.slow
def test_a_packed_build_runs_from_anywhere(built_tools, tmp_path: Path) -> None:
    """ci/pack-build.sh (the CPU build here; a CUDA build goes the same way to a GPU machine
    with no network): the unpacked tools find their libraries beside themselves, not in the
    build directory they were linked in."""
    repo = Path(__file__).parent.parent
    tools = Path(built_tools.binaries["llama-cli"]).parent
    env = {**os.environ, "BACKEND": "cpu", "TQLLAMA": str(Path(sys.executable).parent / "tqllama")}
    subprocess.run([str(repo / "ci" / "pack-build.sh"), str(tmp_path / "pack.tar.xz")],
                   check=True, capture_output=True, text=True, env=env, timeout=600)
    subprocess.run(["tar", "-xJf", str(tmp_path / "pack.tar.xz"), "-C", str(tmp_path)], check=True)
    unpacked = tmp_path / "tqllama-cpu"
    ldd = subprocess.run(["ldd", str(unpacked / "llama-perplexity")], capture_output=True,
                         text=True, check=True).stdout
    ours = [line for line in ldd.splitlines() if "ggml" in line or "llama" in line]
    assert ours and all(str(unpacked) in line for line in ours), ldd
    assert str(tools) not in ldd
    run = subprocess.run([str(unpacked / "llama-cli"), "--version"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and "version" in run.stdout + run.stderr
