"""Shared fixtures. `built_tools`: the real build, made once per test session."""

from __future__ import annotations

import pytest

from tqllama.build import Manifest, build


@pytest.fixture(scope="session")
def built_tools() -> Manifest:
    """The pinned tree with ggml-src/ and patches/, built for the CPU with the test tools.

    Uses the normal cache (`$TQLLAMA_CACHE` or ~/.cache/tqllama), so a developer's or CI's
    earlier build is reused: minutes when cold, seconds when nothing changed.
    `manifest.binaries["llama-cli"]`, `manifest.libraries["libggml-base.so"]`, ...
    """
    return build(tests=True)
