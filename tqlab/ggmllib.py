"""The built ggml libraries through ctypes: the C quantizers, called on NumPy rows.

Tests use it to prove that the C quantizers (the reference of libggml-base and the SIMD
`from_float` of libggml-cpu that writes the KV cache) and the NumPy reference agree byte
for byte.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from tqllama.errors import TqError
from tqllama.types import CACHE_TYPES

_to_float_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
_from_float_t = _to_float_t  # (const float *, void *, int64_t) -> void: the same C signature
# (n, float * s, size_t bs, const void * x, size_t bx, const void * y, size_t by, int nrc)
_vec_dot_t = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t,
                              ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                              ctypes.c_size_t, ctypes.c_int)


class _TypeTraits(ctypes.Structure):
    # struct ggml_type_traits in ggml.h
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


class _TypeTraitsCpu(ctypes.Structure):
    # struct ggml_type_traits_cpu in ggml-cpu.h
    _fields_ = [
        ("from_float", ctypes.c_void_p),
        ("vec_dot", ctypes.c_void_p),
        ("vec_dot_type", ctypes.c_int),
        ("nrows", ctypes.c_int64),
    ]


def _load(path: Path) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(str(path))
    except OSError as exc:
        raise TqError(f"cannot load {path}: {exc}; run `tqllama build` again") from exc


class GgmlBase:
    """ggml_quantize_chunk and the type traits' to_float of one libggml-base build."""

    def __init__(self, path: Path) -> None:
        self._lib = _load(path)
        self._lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        self._lib.ggml_quantize_chunk.argtypes = [
            ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
            ctypes.c_int64, ctypes.c_void_p,
        ]
        self._lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
        self._lib.ggml_get_type_traits.argtypes = [ctypes.c_int]

    def _traits(self, type_name: str) -> tuple[int, _TypeTraits]:
        ctype = CACHE_TYPES[type_name]
        traits = self._lib.ggml_get_type_traits(ctype.ggml_id).contents
        if traits.type_name is None or traits.type_name.decode() != type_name:
            raise TqError(f"this libggml-base has no type {type_name} at id {ctype.ggml_id}; "
                          "rebuild with `tqllama build`")
        return ctype.ggml_id, traits

    def _traits_by_id(self, type_id: int) -> _TypeTraits:
        return self._lib.ggml_get_type_traits(type_id).contents

    def quantize(self, type_name: str, rows: np.ndarray) -> bytes:
        """Rows of float32 through ggml_quantize_chunk: the bytes llama.cpp would store."""
        type_id, traits = self._traits(type_name)
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        nrows, n_per_row = rows.shape
        out = ctypes.create_string_buffer(nrows * n_per_row // traits.blck_size * traits.type_size)
        self._lib.ggml_quantize_chunk(type_id, rows.ctypes.data, out, 0, nrows, n_per_row, None)
        return out.raw

    def dequantize(self, type_name: str, data: bytes, n_values: int) -> np.ndarray:
        _, traits = self._traits(type_name)
        out = np.empty(n_values, dtype=np.float32)
        src = ctypes.create_string_buffer(data, len(data))
        _to_float_t(traits.to_float)(ctypes.addressof(src), out.ctypes.data, n_values)
        return out


class GgmlCpu:
    """The CPU backend's from_float of one libggml-cpu build: what SET_ROWS stores."""

    def __init__(self, path: Path, base: GgmlBase) -> None:
        self._base = base
        self._lib = _load(path)
        self._lib.ggml_get_type_traits_cpu.restype = ctypes.POINTER(_TypeTraitsCpu)
        self._lib.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]
        self._lib.ggml_cpu_init()  # the fp16 tables some kernels read

    def quantize(self, type_name: str, rows: np.ndarray) -> bytes:
        """Rows of float32, one from_float call per row, as the KV cache is written."""
        type_id, traits = self._base._traits(type_name)
        from_float = _from_float_t(self._lib.ggml_get_type_traits_cpu(type_id).contents.from_float)
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        nrows, n_per_row = rows.shape
        row_size = n_per_row // traits.blck_size * traits.type_size
        out = ctypes.create_string_buffer(nrows * row_size)
        for r in range(nrows):
            from_float(rows[r].ctypes.data, ctypes.addressof(out) + r * row_size, n_per_row)
        return out.raw

    def dot(self, type_name: str, data: bytes, queries: np.ndarray) -> np.ndarray:
        """<query_r, row_r> for every stored row, by the CPU vec_dot that attention runs:
        each query converted to the type's vec_dot_type first, as llama.cpp does."""
        type_id, traits = self._base._traits(type_name)
        cpu = self._lib.ggml_get_type_traits_cpu(type_id).contents
        q_traits = self._base._traits_by_id(cpu.vec_dot_type)
        q_from_float = _from_float_t(
            self._lib.ggml_get_type_traits_cpu(cpu.vec_dot_type).contents.from_float)
        vec_dot = _vec_dot_t(cpu.vec_dot)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        nrows, n = queries.shape
        row_size = n // traits.blck_size * traits.type_size
        if len(data) != nrows * row_size:
            raise TqError(f"{len(data)} bytes are not {nrows} rows of {n} {type_name} values")
        rows = ctypes.create_string_buffer(data, len(data))
        q = ctypes.create_string_buffer(n // q_traits.blck_size * q_traits.type_size)
        out = np.empty(nrows, dtype=np.float32)
        s = ctypes.c_float()
        for r in range(nrows):
            q_from_float(queries[r].ctypes.data, ctypes.addressof(q), n)
            vec_dot(n, ctypes.addressof(s), 0, ctypes.addressof(rows) + r * row_size, 0,
                    ctypes.addressof(q), 0, 1)
            out[r] = s.value
        return out
