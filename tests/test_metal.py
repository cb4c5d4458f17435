"""The Metal sources, checked without a Mac.

1. The quantize/dequantize helpers that the Metal kernels share (ggml-metal/kernels/turbo.h)
   compile as plain C++ (tests/metal/turbo_helpers.cpp) and agree byte for byte with the
   NumPy reference on the rows of test_bitexact. So do the trellis types' (kernels/trellis.h,
   tests/metal/trellis_helpers.cpp): the SET_ROWS/CPY quantizer, a Viterbi search by one SIMD
   group, runs on an emulated SIMD group (tests/metal/simd_group.h: MSL's threadgroup_barrier
   on the 32 fibers of tests/emu/lane_fibers.h) with the lanes in both orders, and the
   decoders' values are NumPy's; a block is read and written at the end of a page whose next
   page is inaccessible, so a byte past it is a crash.
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

from tqlab.bitexact import (
    adversarial_rows,
    boundary_rows,
    random_rows,
    tie_rows,
    trellis_edge_rows,
    trellis_rows,
)
from tqllama.build import check_platform
from tqllama.cli import cli
from tqllama.errors import TqError
from tqllama.paths import ggml_src_dir
from tqllama.quant.trellis import TYPES as TRELLIS
from tqllama.quant.trellis import TrellisQuant
from tqllama.quant.turbo import TurboQuantMSE

HERE = Path(__file__).parent
SHIM = HERE / "metal" / "shim"
BITS = (2, 3, 4, 5)


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


# ---- 1b. the trellis helpers: the SIMD-group quantizer and the decoders, bit for bit ------


def build_trellis_helpers(kernels: Path, dest: Path) -> Path:
    """tests/metal/trellis_helpers.cpp (with tests/emu, the lanes' fibers) against the
    kernels/ directory `kernels` (trellis.h, turbo.h) and ggml/src of the sources
    (ggml-trellis-common.h and the other shared headers)."""
    exe = dest / "trellis_helpers"
    subprocess.run(
        [_gxx(), "-std=c++17", "-O2", "-ffp-contract=off", "-Wall", "-Werror",
         "-I", str(HERE / "metal"), "-I", str(HERE / "emu"), "-I", str(kernels),
         "-I", str(ggml_src_dir() / "ggml" / "src"),
         str(HERE / "metal" / "trellis_helpers.cpp"), "-o", str(exe)],
        check=True, capture_output=True, text=True,
    )
    return exe


@pytest.fixture(scope="module")
def trellis_helpers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_trellis_helpers(ggml_src_dir() / "ggml" / "src" / "ggml-metal" / "kernels",
                                 tmp_path_factory.mktemp("metal-trellis"))


def _run_trellis(exe: Path, name: str, mode: str, data: bytes, *extra: str) -> bytes:
    run = subprocess.run([str(exe), name, mode, *extra], input=data, capture_output=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    return run.stdout


def trellis_row_sets(name: str) -> list[tuple[str, np.ndarray]]:
    """Random rows of widths 64-256 (their scales over 40 octaves), the format's edges
    (rows a path reconstructs exactly, constant rows at step 2's equalities, single
    spikes), adversarial_rows (zeros, NaN/Inf, denormals, ties) and the edges above."""
    rng = np.random.default_rng(1100 + TRELLIS[name].k)
    sets = [(f"random {w}", random_rows(rng, 240 // (w // 64), w)) for w in (64, 128, 192, 256)]
    return [*sets, ("format edges", trellis_rows(name, rng)),
            ("adversarial", adversarial_rows(rng)), ("edges", trellis_edge_rows(rng))]


def _first_bad_block(got: bytes, want: bytes, size: int) -> str:
    bad = next(i for i in range(0, len(want), size) if got[i:i + size] != want[i:i + size])
    return f"block {bad // size}: {got[bad:bad + size].hex()} != {want[bad:bad + size].hex()}"


@pytest.mark.parametrize("name", list(TRELLIS))
def test_trellis_quantize_matches_reference(trellis_helpers: Path, name: str) -> None:
    """SET_ROWS / CPY F32 -> trellis: the reference's bytes on every row set, the lanes of
    the emulated SIMD group in order; then the random 64-wide rows and the edges with the
    lanes in reverse order (a threadgroup read before the barrier that orders it differs)."""
    ref = TrellisQuant(name)
    sets = trellis_row_sets(name)
    runs = [(label, rows, ()) for label, rows in sets]
    runs += [(f"{label}, lanes reversed", rows, ("reverse",)) for label, rows in sets
             if label in ("random 64", "format edges", "adversarial", "edges")]
    for label, rows, extra in runs:
        got = _run_trellis(trellis_helpers, name, "q", rows.tobytes(), *extra)
        want = ref.quantize(rows)
        assert len(got) == len(want), label
        if got != want:
            pytest.fail(f"{name} {label}: {_first_bad_block(got, want, ref.block_bytes)}")


@pytest.mark.parametrize("mode", ["d16", "d4"])
@pytest.mark.parametrize("name", list(TRELLIS))
def test_trellis_dequantize_matches_reference(trellis_helpers: Path, name: str, mode: str) -> None:
    """Both forms the kernels use (16 values per call: get_rows, cpy, flash attention and
    its f16 conversion; 4: the flash-attention vec kernel), on quantized rows and on random
    bytes (every scale code and state decodes), each block alone at the end of a page."""
    ref = TrellisQuant(name)
    rng = np.random.default_rng(1200 + TRELLIS[name].k)
    blocks = [ref.quantize(random_rows(rng, 300, 64)), ref.quantize(trellis_rows(name, rng)),
              rng.integers(0, 256, size=3000 * ref.block_bytes, dtype=np.uint8).tobytes()]
    for data in blocks:
        n = len(data) // ref.block_bytes * 64
        got = np.frombuffer(_run_trellis(trellis_helpers, name, mode, data), dtype=np.float32)
        np.testing.assert_array_equal(got, ref.dequantize(data, n))


def test_trellis_emulation_catches_a_missing_barrier(tmp_path: Path) -> None:
    """The check has teeth: without the barrier between a Viterbi step's writes of the path
    errors and the lanes' reads of them, the bytes differ from the reference in one of the
    two lane orders (a lane reads errors another has not written yet)."""
    src = ggml_src_dir() / "ggml" / "src" / "ggml-metal" / "kernels"
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    for name in ("turbo.h", "trellis.h"):
        shutil.copy(src / name, kernels / name)
    writes = "                Dt[TRELLIS_SIMD*i + lane] = D[i];\n            }\n"
    barrier = "            threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    text = (kernels / "trellis.h").read_text()
    assert text.count(writes + barrier) == 1, "the edit point moved in trellis.h: update this test"
    (kernels / "trellis.h").write_text(text.replace(writes + barrier, writes))
    exe = build_trellis_helpers(kernels, tmp_path)
    rows = random_rows(np.random.default_rng(7), 8, 64)
    want = TrellisQuant("turbo2t").quantize(rows)
    outputs = [_run_trellis(exe, "turbo2t", "q", rows.tobytes(), *extra)
               for extra in ((), ("reverse",))]
    assert any(got != want for got in outputs)


def test_trellis_emulation_catches_a_read_past_the_block(tmp_path: Path) -> None:
    """The page guard has teeth: a window extraction that always loads the byte after the
    window's first (turbo2t's last value, in byte 17 alone, would read byte 18) crashes."""
    src = ggml_src_dir() / "ggml" / "src"
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    for name in ("turbo.h", "trellis.h"):
        shutil.copy(src / "ggml-metal" / "kernels" / name, kernels / name)
    guarded = "const int hi = i + 1 < size ? b[i + 1] : 0;"
    text = (src / "ggml-trellis-common.h").read_text()
    assert text.count(guarded) == 1, "the edit point moved in ggml-trellis-common.h"
    # found before ggml/src's: trellis.h includes it from its own directory
    (kernels / "ggml-trellis-common.h").write_text(
        text.replace(guarded, "const int hi = b[i + 1]; (void) size;"))
    exe = build_trellis_helpers(kernels, tmp_path)
    data = TrellisQuant("turbo2t").quantize(random_rows(np.random.default_rng(8), 1, 64))
    run = subprocess.run([str(exe), "turbo2t", "d4"], input=data, capture_output=True,
                         timeout=60)
    assert run.returncode != 0


# ---- 2. the Metal sources through the shim ---------------------------------------------


@pytest.fixture(scope="module")
def ggml_tree(patched_tree: Path) -> Path:
    """ggml/src of the patched tree (pristine + ggml-src/ + patches/)."""
    return patched_tree / "ggml" / "src"


TURBO_LIBRARIES = ("quantize", "fa_aux", "fa_turbo", "fa_vec_turbo", "fa_trellis", "fa_vec_trellis")
# the libraries that also include kernels/trellis.h (the trellis types' kernels)
TRELLIS_LIBRARIES = ("quantize", "fa_aux", "fa_trellis", "fa_vec_trellis")


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


@pytest.mark.slow  # about 10 s: six libraries, 336 flash-attention instantiations
def test_turbo_metal_libraries_type_check(ggml_tree: Path, tmp_path: Path) -> None:
    kernels = kernels_for_gxx(ggml_tree / "ggml-metal" / "kernels", tmp_path / "kernels")
    libs = turbo_libraries(kernels)
    assert {p.stem for p in libs} == set(TURBO_LIBRARIES)
    with_trellis = {p.stem for p in libs if '#include "trellis.h"' in p.read_text()}
    assert with_trellis == set(TRELLIS_LIBRARIES)
    for lib in libs:
        errors = syntax_check(ggml_tree, lib, kernels)
        assert not errors, f"{lib.name}:\n{errors[-4000:]}"


@pytest.mark.slow  # about 20 s: a cmake configure and six embedded libraries
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
        if kind in TRELLIS_LIBRARIES:  # the trellis header, its shared rule and its tables
            assert metal_macro < text.index("TURBO_TABLE_BEGIN(int8_t, trellis_table_turbo3t"), kind
            assert "trellis_quantize_block_simd" in text and "TRELLIS_SCALE_BIAS" in text, kind
        # no tqllama header left to resolve (the Mac compiles this text with no include
        # path; upstream's own `#include "ggml-common.h"` stays, in an #else not compiled)
        assert not re.search(r'#\s*include\s*"(ggml-)?(turbo|trellis)', text), kind
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
    # the trellis quantizer handed the block where its bytes belong (SET_ROWS kernel)
    "trellis kernel": ("quantize.metal",
                       "(src_row + QK_TRELLIS*ind, (device uint8_t *) (dst_row + ind), &sm",
                       "(src_row + QK_TRELLIS*ind, dst_row + ind, &sm", "quantize.metal",
                       r"quantize\.metal:\d+:\d+: error: cannot convert .block_turbo[23]t\*. "
                       r"to .uint8_t\*."),
    # a turbo2t block handed to the turbo3t dequantizer in a vec flash-attention instantiation
    "trellis instantiation": ("fa_vec_trellis.metal",
                              "turbo3t, block_turbo3t, 16, dequantize_turbo3t_t4\n",
                              "turbo3t, block_turbo2t, 16, dequantize_turbo3t_t4\n",
                              "fa_vec_trellis.metal",
                              r"fa_vec_trellis\.metal:\d+:\d+: error: template-id "
                              r".kernel_flash_attn_ext_vec<.*block_turbo2t, 16, "
                              r"dequantize_turbo3t_t4.* does not match"),
    # the trellis decoder of the flash-attention kernels looking up the block, not its state
    "trellis helper": ("trellis.h", "y[i] = TURBO_MUL(d, (float) tt::code(s));",
                       "y[i] = TURBO_MUL(d, (float) tt::code(b));", "fa_trellis.metal",
                       r"trellis\.h:\d+:\d+: error: invalid conversion from .const "
                       r"block_turbo[23]t\*. to .int."),
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
