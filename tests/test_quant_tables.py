"""The committed tables and the generated C header agree, and obey FORMAT.md."""

from __future__ import annotations

import numpy as np

from tqllama.paths import ggml_src_dir
from tqllama.quant import header, tables, trellis


def test_committed_header_is_current() -> None:
    path = ggml_src_dir() / header.HEADER_RELPATH
    assert path.read_text() == header.render(), "run: python scripts/gen_tables.py"


def test_committed_trellis_header_is_current() -> None:
    path = ggml_src_dir() / header.TRELLIS_HEADER_RELPATH
    text = path.read_text()
    assert text == header.render_trellis(), "run: python scripts/gen_tables.py"
    for tt in trellis.TYPES.values():
        assert f"#define {tt.name.upper()}_L {tt.L}" in text
        body = text.split(f"trellis_table_{tt.name}, 256)")[1].split("TURBO_TABLE_END")[0]
        assert [int(v) for v in body.replace("\n", " ").split(",") if v.strip()] == list(tt.table)


def test_codebooks_are_sorted_int8() -> None:
    for bits in tables.BITS:
        v = np.array(tables.KVALUES[bits])
        assert len(v) == 1 << bits
        assert np.all(np.diff(v) > 0)
        assert np.abs(v).max() <= 127
        assert tables.cbmax(bits) == np.abs(v).max()
        t = tables.kthresh(bits)
        assert t.dtype == np.float32
        np.testing.assert_array_equal(t.astype(np.float64) * 2, v[:-1] + v[1:])
        lo, hi = tables.SEARCH[bits]
        assert lo <= hi


def test_header_symbols() -> None:
    text = header.render()
    for sym in (
        "#define TURBO_EXP_BIAS 24",
        "#define TURBO_KMAX 535",
        "#define TURBO_XMAX 65504.0f",
        "TURBO_TABLE_BEGIN(float, turbo_scale_mant, 16)",
        "TURBO_TABLE_BEGIN(int8_t, kvalues_turbo4, 16)",
        "TURBO_TABLE_BEGIN(float, kthresh_turbo4, 15)",
        "TURBO_TABLE_BEGIN(int8_t, kvalues_turbo3, 8)",
        "TURBO_TABLE_BEGIN(float, kthresh_turbo2, 3)",
        "TURBO_TABLE_BEGIN(int8_t, turbo_signs, 512)",
        "TURBO_TABLE_BEGIN(int8_t, turbo_qjl_signs, 128)",
        "0x1.0b5586p+0f",
    ):
        assert sym in text
    for bits in tables.BITS:
        assert f"#define TURBO{bits}_CBMAX {tables.cbmax(bits)}" in text
        assert f"#define TURBO{bits}_SEARCH_LO {tables.SEARCH[bits][0]}" in text


def test_hex_literals_round_trip() -> None:
    text = header.render()
    body = text.split("turbo_scale_mant, 16)")[1].split("TURBO_TABLE_END")[0]
    values = [float.fromhex(v.strip().rstrip("f")) for v in body.split(",") if v.strip()]
    np.testing.assert_array_equal(np.array(values, dtype=np.float32), tables.scale_mant())
