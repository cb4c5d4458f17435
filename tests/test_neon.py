"""The AArch64 NEON turbo and trellis CPU kernels against the reference, on this machine.

tests/c/turbo_kernels.c, the kernel files (the generic ggml-cpu/turbo-cpu.c and
trellis-cpu.c, and every ggml-cpu/arch/arm/*-cpu.c of the tree) and the aarch64 static
libggml of the same tree are cross-built with zig and run under unicorn (tqlab/aarch64.py):
once with the dot-product extension (sdot) and once for the armv8-a baseline (its NEON
without sdot). The library build is cached; each run takes about half a minute of emulation.
test_emulated_process holds the emulated Linux process to what a program may ask of it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tqlab.aarch64 import BASELINE, DOTPROD, EmulationError, Target, build_program, run, toolchain
from tqllama.build import backend_dir

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent


@pytest.mark.parametrize("target", [DOTPROD, BASELINE], ids=lambda t: t.march)
def test_neon_kernels_match_reference(built_tools, tmp_path: Path, target: Target) -> None:
    exe = build_program(backend_dir("cpu") / "src", HERE / "c" / "turbo_kernels.c", target,
                        tmp_path)
    result = run(exe, hwcap=target.hwcap)
    assert result.status == 0, result.stderr[-2000:]
    # the NEON path on both: every AArch64 CPU has NEON, only sdot is optional
    match = re.search(r"turbo kernels \(neon\): (\d+) passed, 0 failed", result.stdout)
    assert match and int(match.group(1)) == 2700, result.stdout


def _emulated_process(tmp_path: Path, *defines: str) -> Path:
    exe = tmp_path / "emulated_process"
    subprocess.run([str(toolchain()["cc"]), "-O2", *defines,
                    str(HERE / "c" / "emulated_process.c"), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    return exe


def test_emulated_process(tmp_path: Path) -> None:
    """The system calls a musl program makes beyond what the kernel test needs, and the
    ways a run ends: an exit status, abort(), a system call the emulation does not know."""
    result = run(_emulated_process(tmp_path), hwcap=DOTPROD.hwcap)
    assert (result.status, result.stdout, result.stderr) == (
        3, f"hwcap {DOTPROD.hwcap:#x}\n", "to stderr\n")
    assert run(_emulated_process(tmp_path, "-DABORT")).status == -6  # SIGABRT
    with pytest.raises(EmulationError, match=r"system call 424 .* is not emulated"):
        run(_emulated_process(tmp_path, "-DUNEMULATED"))
