"""Running the built llama.cpp tools and the tqllama command from tests: output captured,
llama-perplexity parsed; the kernel files the C kernel test is compiled with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tqllama.bench.parse_perplexity import PerplexityResult, parse_perplexity


def run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


def _foreground_sigint() -> None:
    """A job a non-interactive shell starts in the background (`make test &`, `nohup`)
    ignores SIGINT, and so do its children, where Python then never raises
    KeyboardInterrupt: the tqllama under test gets the default, as at a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def tqllama_cli(args: list[str], cache: Path, environ: dict[str, str] | None = None,
                **kw) -> subprocess.Popen[str]:
    """`tqllama ARGS` started in `environ` (this process's when None) with its cache in
    `cache`, stdout and stderr piped as text."""
    env = {**(os.environ if environ is None else environ), "TQLLAMA_CACHE": str(cache)}
    return subprocess.Popen([sys.executable, "-c", "from tqllama.cli import main; main()", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_foreground_sigint, **kw)


def perplexity(binary: str, *args: str, env: dict[str, str] | None = None,
               ) -> tuple[PerplexityResult, str]:
    """One llama-perplexity run (verbosity 4: the KV cache line), parsed, with its stderr."""
    proc = run([binary, *args, "-t", "2", "-fa", "on", "-lv", "4"], env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return parse_perplexity(proc.stdout + proc.stderr), proc.stderr


def kernel_sources(tree: Path, arch: str) -> list[Path]:
    """The CPU backend's turbo and trellis kernel files in the patched llama.cpp `tree`: the
    generic code and every SIMD file of `arch` ("x86", "arm") that the tree has, which the
    kernel test (tests/c/turbo_kernels.c) is compiled with."""
    cpu = tree / "ggml" / "src" / "ggml-cpu"
    return [cpu / "turbo-cpu.c", cpu / "trellis-cpu.c",
            *sorted((cpu / "arch" / arch).glob("*-cpu.c"))]
