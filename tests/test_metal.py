"""The Metal sources, checked without a Mac.

1. The quantize/dequantize helpers that the Metal kernels share (ggml-metal/kernels/turbo.h)
   compile as plain C++ (tests/metal/turbo_helpers.cpp) and agree byte for byte with the
   NumPy reference on the rows of test_bitexact.
2. Every Metal library that holds turbo kernels (as sources, and as the single file the
   default Mac build embeds), and the host code that dispatches them, type-checks with
   g++ -fsyntax-only against tests/metal/shim/metal_stdlib, a C++ model of the MSL that
   ggml's kernels use; a kernel with one injected error fails that check.
3. `tqllama build --backend metal` says in one line that it needs macOS.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tqlab.bitexact import adversarial_rows, boundary_rows, random_rows, tie_rows
from tqllama.build import check_platform
from tqllama.cli import cli
from tqllama.errors import TqError
from tqllama.paths import ggml_src_dir
from tqllama.quant.turbo import TurboQuantMSE

HERE = Path(__file__).parent
SHIM = HERE / "metal" / "shim"
BITS = (2, 3, 4)


def _gxx() -> str:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("no g++")
    return gxx


def _gnu_gxx() -> str:
    """The shim and the expected error messages are GNU g++'s (on a Mac, g++ is clang, and
    ci/metal-check.sh runs Apple's own compiler instead)."""
    gxx = _gxx()
    version = subprocess.run([gxx, "--version"], capture_output=True, text=True).stdout
    if "Free Software Foundation" not in version:
        pytest.skip(f"g++ is not GNU g++: {version.splitlines()[0] if version else gxx}")
    return gxx


# ---- 1. the shared helpers, bit for bit ------------------------------------------------


@pytest.fixture(scope="module")
def helpers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = ggml_src_dir() / "ggml" / "src"
    exe = tmp_path_factory.mktemp("metal") / "turbo_helpers"
    subprocess.run(
        [_gxx(), "-std=c++17", "-O2", "-ffp-contract=off", "-Wall", "-Werror",
         "-I", str(src / "ggml-metal" / "kernels"), "-I", str(src),
         str(HERE / "metal" / "turbo_helpers.cpp"), "-o", str(exe)],
        check=True, capture_output=True, text=True,
    )
    return exe


def _run(exe: Path, bits: int, mode: str, data: bytes) -> bytes:
    run = subprocess.run([str(exe), str(bits), mode], input=data, capture_output=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    return run.stdout


@pytest.mark.parametrize("bits", BITS)
def test_quantize_matches_reference(helpers: Path, bits: int) -> None:
    ref = TurboQuantMSE(bits)
    rng = np.random.default_rng(100 + bits)
    for rows in (random_rows(rng, 2000, 128), adversarial_rows(rng), tie_rows(bits),
                 boundary_rows(bits, rng)):
        got = _run(helpers, bits, "q", rows.tobytes())
        want = ref.quantize(rows)
        if got != want:
            size = ref.block_bytes
            bad = next(i for i in range(0, len(want), size) if got[i:i + size] != want[i:i + size])
            pytest.fail(f"turbo{bits} block {bad // size} differs: {got[bad:bad + size].hex()} "
                        f"!= {want[bad:bad + size].hex()}")


@pytest.mark.parametrize("mode", ["d16", "d4"])
@pytest.mark.parametrize("bits", BITS)
def test_dequantize_matches_reference(helpers: Path, bits: int, mode: str) -> None:
    """Both forms the kernels use (16 values per call: get_rows, cpy, FA; 4: the FA vec
    kernel), on quantized rows and on random bytes (every scale field decodes)."""
    ref = TurboQuantMSE(bits)
    rng = np.random.default_rng(200 + bits)
    blocks = [ref.quantize(random_rows(rng, 500, 64)),
              rng.integers(0, 256, size=3000 * ref.block_bytes, dtype=np.uint8).tobytes()]
    for data in blocks:
        n = len(data) // ref.block_bytes * 64
        got = np.frombuffer(_run(helpers, bits, mode, data), dtype=np.float32)
        np.testing.assert_array_equal(got, ref.dequantize(data, n))


# ---- 2. the Metal sources through the shim ---------------------------------------------


@pytest.fixture(scope="module")
def ggml_tree(patched_tree: Path) -> Path:
    """ggml/src of the patched tree (pristine + ggml-src/ + patches/)."""
    return patched_tree / "ggml" / "src"


TURBO_LIBRARIES = ("quantize", "fa_aux", "fa_turbo", "fa_vec_turbo")


def turbo_libraries(kernels: Path) -> list[Path]:
    """The Metal libraries (kernels/*.metal, one per library) that include turbo.h."""
    return sorted(p for p in kernels.glob("*.metal")
                  if re.search(r'^#include "turbo\.h"', p.read_text(), re.M))


# Two MSL spellings are not C++ syntax, so no header can model them; the check rewrites
# them in its copy of the kernels: the [[threadgroup(N)]] buffer attribute (`threadgroup`
# is also the address space, an empty macro in the shim) and GNU range designators
# `{ [0 ... N-1] = v }`, which g++ knows in C only (`{ v }` has the same types).
_MSL_ONLY = (
    (re.compile(r"\[\[threadgroup\("), "[[metal_shim_threadgroup("),
    (re.compile(r"\{\s*\[0 \.\.\. [^\]]+\] = ([^}]*)\}"), r"{ \1 }"),
)


def kernels_for_gxx(kernels: Path, dest: Path) -> Path:
    """A copy of ggml-metal/kernels that g++ can parse (see _MSL_ONLY)."""
    dest.mkdir(parents=True)
    for src in kernels.iterdir():
        text = src.read_text()
        for pattern, repl in _MSL_ONLY:
            text = pattern.sub(repl, text)
        (dest / src.name).write_text(text)
    return dest


def syntax_check(ggml_src: Path, source: Path, kernels: Path | None = None) -> str:
    """g++ -fsyntax-only of one kernel library (kernels/NAME.metal, as in the copy
    `kernels`) or host file (ggml-metal/NAME.cpp) as C++; its errors, '' if none."""
    cmd = [_gnu_gxx(), "-std=c++17", "-fsyntax-only", "-Wno-attributes", "-Wno-unknown-pragmas"]
    if kernels is not None:
        cmd += ["-x", "c++", "-isystem", str(SHIM), "-include", "metal_stdlib",
                "-I", str(kernels)]
    cmd += ["-I", str(ggml_src / "ggml-metal"), "-I", str(ggml_src),
            "-I", str(ggml_src.parent / "include"), str(source)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return "" if run.returncode == 0 else run.stderr


@pytest.mark.slow  # about 10 s: four libraries, 126 flash-attention instantiations
def test_turbo_metal_libraries_type_check(ggml_tree: Path, tmp_path: Path) -> None:
    kernels = kernels_for_gxx(ggml_tree / "ggml-metal" / "kernels", tmp_path / "kernels")
    libs = turbo_libraries(kernels)
    assert {p.stem for p in libs} == set(TURBO_LIBRARIES)
    for lib in libs:
        errors = syntax_check(ggml_tree, lib, kernels)
        assert not errors, f"{lib.name}:\n{errors[-4000:]}"


@pytest.mark.slow  # about 20 s: a cmake configure and four embedded libraries
def test_embedded_metal_sources_type_check(ggml_tree: Path, tmp_path: Path) -> None:
    """The default Mac build embeds each library as one source, assembled by the CMake
    steps of ggml-metal/CMakeLists.txt (cat and sed: nothing Apple-specific), and compiles
    it at run time. Those very steps run here (configured for Metal with stand-in
    frameworks, then only the embed commands, not the build); their output, a single file
    with no include left to resolve, must type-check like the sources."""
    cmake, ninja = shutil.which("cmake"), shutil.which("ninja")
    if cmake is None or ninja is None:
        pytest.skip("needs cmake and ninja")
    build = tmp_path / "build"
    subprocess.run(
        [cmake, "-S", str(ggml_tree.parent.parent), "-B", str(build), "-G", "Ninja",
         "-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON",
         *(f"-D{fw}=/dev/null" for fw in ("FOUNDATION_LIBRARY", "METAL_FRAMEWORK",
                                            "METALKIT_FRAMEWORK")),
         "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=OFF",
         "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF"],
        check=True, capture_output=True, text=True)
    embedded = tmp_path / "embedded"
    embedded.mkdir()
    for kind in TURBO_LIBRARIES:
        target = f"ggml/src/ggml-metal/autogenerated/ggml-metal-embed-{kind}.s"
        commands = subprocess.run([ninja, "-C", str(build), "-t", "commands", target],
                                  check=True, capture_output=True, text=True).stdout
        # the last command is the embed step itself; the others build ggml-base
        subprocess.run(["bash", "-c", commands.strip().splitlines()[-1]], check=True)
        text = (build / f"ggml/src/ggml-metal/autogenerated/ggml-metal-embed-{kind}.metal"
                ).read_text()
        # the shim's `constant` is empty: check here that the tables come after the Metal
        # TURBO_TABLE_BEGIN of ggml-turbo-common.h (constant address space), not with the
        # C++ default
        metal_macro = text.index("TURBO_TABLE_BEGIN(type, name, size) static const constant")
        assert metal_macro < text.index("TURBO_TABLE_BEGIN(float, turbo_scale_mant"), kind
        for pattern, repl in _MSL_ONLY:
            text = pattern.sub(repl, text)
        source = embedded / f"{kind}.metal"
        source.write_text(text)
        run = subprocess.run(
            [_gnu_gxx(), "-std=c++17", "-fsyntax-only", "-Wno-attributes", "-Wno-unknown-pragmas",
             "-x", "c++", "-isystem", str(SHIM), "-include", "metal_stdlib",
             "-DGGML_METAL_EMBED_LIBRARY", str(source)],
            capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"embedded {kind}:\n{run.stderr[-4000:]}"


@pytest.mark.parametrize("host", ["ggml-metal-device.cpp", "ggml-metal-ops.cpp"])
def test_metal_host_code_type_checks(ggml_tree: Path, host: str) -> None:
    errors = syntax_check(ggml_tree, ggml_tree / "ggml-metal" / host)
    assert not errors, errors[-4000:]


def test_metal_supports_op_compiles_as_c(ggml_tree: Path, tmp_path: Path) -> None:
    """supports_op lives in ggml-metal-device.m (Objective-C, Apple's headers); the
    function itself is plain C: compiled alone, with a stand-in for the device struct."""
    device_m = (ggml_tree / "ggml-metal" / "ggml-metal-device.m").read_text()
    start = device_m.index("static bool ggml_metal_supports_mul_mat_op(")
    end = device_m.index("const struct ggml_metal_device_props * ggml_metal_device_get_props(")
    source = tmp_path / "supports_op.c"
    source.write_text(
        '#include "ggml-impl.h"\n#include "ggml-metal-device.h"\n#include "ggml-metal-impl.h"\n'
        '#include "ggml-metal-common.h"\n'
        '#include "ggml-metal-turbo.h"\n'
        "struct ggml_metal_device { struct { bool has_simdgroup_mm, has_simdgroup_reduction, "
        "has_bfloat; size_t max_theadgroup_memory_size; } props; };\n" + device_m[start:end])
    cc = shutil.which("gcc") or pytest.skip("no gcc")
    run = subprocess.run(
        [cc, "-std=gnu11", "-fsyntax-only", "-Wall", "-Werror", "-I", str(ggml_tree / "ggml-metal"),
         "-I", str(ggml_tree), "-I", str(ggml_tree.parent / "include"), str(source)],
        capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]


# one injected error per case: (file, text, replacement, library to check, expected error)
BROKEN = {
    # the block where its index buffer belongs: a wrong pointer type in the shared helper
    "helper": ("turbo.h", "dst.s = turbo_quantize_block(src, idx, TURBO_CODEBOOK(4));",
               "dst.s = turbo_quantize_block(src, &dst, TURBO_CODEBOOK(4));", "quantize.metal",
               r"turbo\.h:\d+:\d+: error: cannot convert .block_turbo4\*. to .uint8_t\*."),
    # a turbo4 block handed to the turbo3 dequantizer in a flash-attention instantiation
    "instantiation": ("fa_turbo.metal", "turbo3, block_turbo3, 4, dequantize_turbo3\n",
                      "turbo3, block_turbo4, 4, dequantize_turbo3\n", "fa_turbo.metal",
                      r"fa_turbo\.metal:\d+:\d+: error: template-id .kernel_flash_attn_ext<.*"
                      r"block_turbo4, 4, dequantize_turbo3.* does not match"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_kernel_fails_the_check(ggml_tree: Path, tmp_path: Path, case: str) -> None:
    name, old, new, library, error = BROKEN[case]
    kernels = kernels_for_gxx(ggml_tree / "ggml-metal" / "kernels", tmp_path / "kernels")
    text = (kernels / name).read_text()
    assert text.count(old) == 1
    (kernels / name).write_text(text.replace(old, new))
    errors = syntax_check(ggml_tree, kernels / library, kernels)
    assert re.search(error, errors), errors[-4000:]


# ---- 3. the build ----------------------------------------------------------------------


def test_metal_build_needs_macos() -> None:
    with pytest.raises(TqError, match="--backend metal needs macOS"):
        check_platform("metal", "linux")
    check_platform("metal", "darwin")
    check_platform("cpu", "linux")


@pytest.mark.skipif(sys.platform == "darwin", reason="Metal builds on macOS")
def test_metal_build_fails_with_one_line_off_macos() -> None:
    result = CliRunner().invoke(cli, ["build", "--backend", "metal"])
    assert result.exit_code == 1
    assert result.output == (f"tqllama: error: --backend metal needs macOS (Apple's Metal "
                             f"compiler), not {sys.platform}: build on a Mac, where "
                             "ci/metal-check.sh builds it and runs the checks\n")
