"""Shared fixtures. `built_tools`: the real build, made once per test session; `ggml`,
`ggml_cpu`: its libggml-base and libggml-cpu through ctypes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tqllama.build import Manifest, build
from tqllama.ggmllib import GgmlBase, GgmlCpu


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
