"""The real thing: the pinned llama.cpp with our glue, built once per session for the CPU."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tqllama.build import TEST_TOOLS, TOOLS, Manifest, binary_path, build

pytestmark = pytest.mark.slow


def test_tools_and_libraries_are_built(built_tools: Manifest) -> None:
    assert set(built_tools.binaries) == set(TOOLS) | set(TEST_TOOLS)
    for name in built_tools.binaries:
        assert binary_path(name) == Path(built_tools.binaries[name])
    assert Path(built_tools.libraries["libggml-base.so"]).is_file()
    assert built_tools.sdist_sha256 is not None and built_tools.source == "sdist"


def test_llama_cli_reports_the_pinned_commit_and_key(built_tools: Manifest) -> None:
    proc = subprocess.run([built_tools.binaries["llama-cli"], "--version"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"0c1e57098-tq{built_tools.key[:8]}" in proc.stdout + proc.stderr


def test_llama_server_runs(built_tools: Manifest) -> None:
    proc = subprocess.run([built_tools.binaries["llama-server"], "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--cache-type-k" in proc.stdout


def test_unchanged_second_build_is_a_noop(built_tools: Manifest) -> None:
    started = time.monotonic()
    again = build(tests=True)
    assert time.monotonic() - started < 10
    assert again == built_tools
