"""The built libggml-base through ctypes: the C quantizers, called on NumPy rows.

Tests use it to prove that the C reference and the NumPy reference agree byte for byte;
`tqllama verify` could use it to compare the two on a user's machine.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from tqllama.errors import TqError
from tqllama.types import CACHE_TYPES

_to_float_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


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


class GgmlBase:
    """ggml_quantize_chunk and the type traits' to_float of one libggml-base build."""

    def __init__(self, path: Path) -> None:
        try:
            self._lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise TqError(f"cannot load {path}: {exc}; run `tqllama build` again") from exc
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
        if traits.type_name.decode() != type_name:
            raise TqError(f"this libggml-base has no type {type_name} at id {ctype.ggml_id}; "
                          "rebuild with `tqllama build`")
        return ctype.ggml_id, traits

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
