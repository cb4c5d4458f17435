"""CUDA compile check: the turbo CUDA code of the patched tree compiles with nvcc.

No GPU is needed. nvcc compiles, with ggml-cuda's flags, for sm_90 and sm_86 (to SASS):
ggml-cuda/turbo.cu, and the turbo flash-attention vec instances cut to one head size each
(turbo2/turbo3 at 64, turbo3/turbo4 at 128, turbo4/turbo2 at 256, turbo5/turbo5 at 128:
every plain turbo type as K and as V, every head size; turbo2_qjl/q8_0 at 64 and
turbo4_qjl/turbo3 at 128: the _qjl keys' projected query); for sm_90
ggml-cuda/trellis.cu (the turbo2t/turbo3t quantizer) and the trellis vec instances
turbo3t/turbo3t at 128 and turbo2t/turbo2t at 64 (each trellis type as K and as V); and for
compute_90 (to PTX) the upstream files that the CUDA patches hook the turbo and trellis
types into. What the device code computes is tests/test_cuda_warp.py's
check (on the CPU); running the kernels is ci/cuda-check.sh's, on an NVIDIA GPU.

Needs nvcc and the cuBLAS headers (every ggml-cuda source includes cublas_v2.h): the CUDA
toolkit's, or the `nvidia-cublas` wheel's (`pip install -e '.[cuda]'`). Without them the
tests skip and say so. Files compile one at a time (2-core machines); the README's CUDA
section has the measured time.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tqllama import build as build_mod
from tqllama import source
from tqllama.patching import make_tree

pytestmark = pytest.mark.slow

NVCC = build_mod._find_nvcc()
CUBLAS = build_mod.cublas_dirs()
if NVCC is None:
    pytest.skip("nvcc not found: install the CUDA toolkit (or set CUDACXX) to run the CUDA "
                "compile check", allow_module_level=True)
if CUBLAS is None:
    pytest.skip("cuBLAS headers not found (ggml-cuda includes cublas_v2.h): "
                "`pip install -e '.[cuda]'` to run the CUDA compile check",
                allow_module_level=True)

ARCHS = ("90", "86")
CUDA_DIR = Path("ggml/src/ggml-cuda")
# (head size, instance file): the line of that head size is taken from each generated file
FA_CUTS = ((64, "turbo2-turbo3"), (128, "turbo3-turbo4"), (256, "turbo4-turbo2"),
           (128, "turbo5-turbo5"), (64, "turbo2_qjl-q8_0"), (128, "turbo4_qjl-turbo3"))
# the trellis types' (turbo2t, turbo3t): sm_90 only, their own translation unit
FA_CUTS_TRELLIS = ((128, "turbo3t-turbo3t"), (64, "turbo2t-turbo2t"))
# The upstream files the turbo types are hooked into: convert, get_rows, cpy, set_rows,
# the FA dispatch, supports_op.
HOOKED_SOURCES = ("convert.cu", "getrows.cu", "cpy.cu", "set-rows.cu", "fattn.cu", "ggml-cuda.cu")
# fattn.cu reads one GGML_CUDA_FA_<K>_<V> per pair, which cmake's GGML_CUDA_FA_QUANTS sets
FA_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "BF16", "F16", "TURBO2", "TURBO3", "TURBO4",
            "TURBO5", "TURBO2_QJL", "TURBO3_QJL", "TURBO4_QJL", "TURBO2T", "TURBO3T")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pinned tree with ggml-src/ and patches/ applied."""
    dest = tmp_path_factory.mktemp("cuda") / "tree"
    make_tree(source.fetch(), dest)
    return dest


def nvcc(tree: Path, src: Path, arch: str, out: Path) -> subprocess.CompletedProcess[str]:
    """Compile one ggml-cuda source as ggml's CMake does (Release, -use_fast_math); `arch`
    is "90" (SASS for sm_90) or "compute_90" (PTX only: the C++ is checked, ptxas skipped)."""
    assert NVCC is not None and CUBLAS is not None
    cuda_dir = tree / CUDA_DIR
    fa = [f"-DGGML_CUDA_FA_{k}_{v}=1" for k in FA_TYPES for v in FA_TYPES]
    target = f"-arch={arch}" if arch.startswith("compute_") else f"-arch=sm_{arch}"
    cmd = [NVCC, "-std=c++17", target, "-O3", "-DNDEBUG", "-use_fast_math",
           "-extended-lambda", "--threads", "1", "-DGGML_CUDA_USE_GRAPHS", *fa,
           f"-I{cuda_dir}", f"-I{cuda_dir.parent}", f"-I{tree / 'ggml/include'}",
           f"-I{CUBLAS[0]}", "-c", str(src), "-o", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def assert_compiles(tree: Path, src: Path, arch: str, tmp_path: Path) -> None:
    proc = nvcc(tree, src, arch, tmp_path / "out.o")
    assert proc.returncode == 0, f"{src.name} ({arch}):\n{proc.stdout}{proc.stderr}"


def fa_cut(tree: Path, cuts: tuple[tuple[int, str], ...] = FA_CUTS, name: str = "turbo") -> Path:
    """One translation unit with one head size of each of `cuts`' vec instances."""
    instances = tree / CUDA_DIR / "template-instances"
    lines = ['#include "../fattn-vec.cuh"\n']
    for head, pair in cuts:
        text = (instances / f"fattn-vec-instance-{pair}.cu").read_text()
        lines += [ln + "\n" for ln in text.splitlines()
                  if re.match(rf"DECL_FATTN_VEC_CASE\(\s*{head},", ln)]
    assert len(lines) == 1 + len(cuts), "the generated instances changed form: update this"
    cut = instances / f"fattn-vec-{name}-check.cu"
    cut.write_text("".join(lines))
    return cut


@pytest.mark.parametrize("arch", ARCHS)
def test_turbo_sources_compile(tree: Path, arch: str, tmp_path: Path) -> None:
    assert_compiles(tree, tree / CUDA_DIR / "turbo.cu", arch, tmp_path)
    assert_compiles(tree, fa_cut(tree), arch, tmp_path)


def test_trellis_sources_compile(tree: Path, tmp_path: Path) -> None:
    """The trellis quantizer (a warp per block, its scratch in shared memory) and the
    trellis vec instances, for sm_90 (the launch bounds and the shared memory are checked
    by ptxas there)."""
    assert_compiles(tree, tree / CUDA_DIR / "trellis.cu", ARCHS[0], tmp_path)
    assert_compiles(tree, fa_cut(tree, FA_CUTS_TRELLIS, "trellis"), ARCHS[0], tmp_path)


@pytest.mark.parametrize("name", HOOKED_SOURCES)
def test_hooked_upstream_sources_compile(tree: Path, name: str, tmp_path: Path) -> None:
    assert_compiles(tree, tree / CUDA_DIR / name, f"compute_{ARCHS[0]}", tmp_path)


def test_cuda_build_configures(tree: Path, tmp_path: Path) -> None:
    """`tqllama build --backend cuda`'s cmake arguments configure the tree as they are: cuBLAS
    found (from the wheel where the toolkit lacks it), the driver library or, on a machine
    without a GPU driver (this one), GGML_CUDA_NO_VMM, and the 57 turbo vec instances (32
    plain pairs, 18 with a _qjl key, 7 with a trellis type) and turbo.cu and trellis.cu in
    the build by default."""
    args = build_mod.cmake_config_args("cuda", False)
    assert ("-DGGML_CUDA_NO_VMM=ON" in args) == (not build_mod.cuda_driver_found())
    proc = subprocess.run(["cmake", "-S", str(tree), "-B", str(tmp_path / "build"), *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ninja_or_make = "\n".join(p.read_text() for p in (tmp_path / "build").rglob("build.make"))
    ninja_or_make += "\n".join(p.read_text() for p in (tmp_path / "build").glob("build.ninja"))
    instances = set(re.findall(r"fattn-vec-instance-([a-z0-9_]+-[a-z0-9_]+)\.cu", ninja_or_make))
    assert len({i for i in instances if "turbo" in i}) == 57
    assert len({i for i in instances if "qjl" in i}) == 18
    assert len({i for i in instances if re.search(r"turbo[23]t", i)}) == 7
    assert "ggml-cuda/turbo.cu" in ninja_or_make
    assert "ggml-cuda/trellis.cu" in ninja_or_make


def test_a_cuda_type_error_fails_the_check(tree: Path, tmp_path: Path) -> None:
    """The check is real: a device-code type error in a copy of turbo.cu fails it, and
    nvcc names the line."""
    good = (tree / CUDA_DIR / "turbo.cu").read_text()
    line = "    turbo_cuda_quantize_block_warp<type>(x, y);\n"
    assert good.count(line) == 1, "the injection point moved: update this test"
    bad = tree / CUDA_DIR / "turbo-type-error.cu"  # beside turbo.cu: same includes
    bad.write_text(good.replace(line, line.replace("(x, y)", "(y, x)")))
    lineno = good[:good.index(line)].count("\n") + 1

    proc = nvcc(tree, bad, f"compute_{ARCHS[0]}", tmp_path / "out.o")

    assert proc.returncode != 0
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "error" in ln]
    print("\n".join(errors))  # shown with -s / -rP: what a CUDA type error looks like
    assert any(re.search(rf"turbo-type-error\.cu\({lineno}\): error", ln) for ln in errors)
