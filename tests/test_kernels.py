"""The turbo and trellis CPU kernels (quantizer, vec_dot with q8_0, fused V accumulation)
against the reference.

tests/c/turbo_kernels.c is compiled with the kernel files (the generic ggml-cpu/turbo-cpu.c
and trellis-cpu.c, and their arch/x86 versions) into a small program; built twice, it
checks the AVX2 path and the generic fallback that every other architecture runs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tqlab.tools import kernel_sources
from tqllama.build import backend_dir

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent


def _has_avx2() -> bool:
    try:
        return " avx2 " in Path("/proc/cpuinfo").read_text().replace("\n", " ")
    except OSError:
        return False


@pytest.mark.parametrize("variant", ["simd", "scalar"])
def test_kernels_match_reference(built_tools, tmp_path: Path, variant: str) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    if variant == "simd" and not _has_avx2():
        pytest.skip("no AVX2 on this machine: the scalar variant covers it")
    src = backend_dir("cpu") / "src" / "ggml"
    lib_dir = Path(built_tools.libraries["libggml-base.so"]).parent
    flags = ["-march=native"] if variant == "simd" else ["-march=native", "-mno-avx2", "-mno-fma"]
    exe = tmp_path / f"turbo_kernels_{variant}"
    # -ffp-contract=off as in the build: the quantizer is bit-exact only without fused multiply-adds
    subprocess.run(
        [cc, "-O2", "-std=gnu11", "-ffp-contract=off", *flags, "-I", str(src / "src"),
         "-I", str(src / "src" / "ggml-cpu"), "-I", str(src / "include"),
         str(HERE / "c" / "turbo_kernels.c"),
         *(str(p) for p in kernel_sources(backend_dir("cpu") / "src", "x86")),
         "-L", str(lib_dir), "-lggml-cpu", "-lggml-base", "-lm", f"-Wl,-rpath,{lib_dir}",
         "-o", str(exe)],
        check=True, capture_output=True, text=True,
    )
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    expected = "avx2" if variant == "simd" else "scalar"
    match = re.search(rf"turbo kernels \({expected}\): (\d+) passed, 0 failed", run.stdout)
    assert match and int(match.group(1)) == 2700, run.stdout
