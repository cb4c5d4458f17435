"""Two-stage turbo types (TurboQuant_prod, arXiv 2504.19874 with QJL, arXiv 2406.03482).

Stage 1 quantizes a block of 64 with turbo{b-1} (docs/FORMAT.md). Stage 2 keeps one bit
per value of the residual r = x - x_mse after a fixed projection S, plus |r| as fp16:
turbo{b}_qjl, laid out and computed as docs/FORMAT-QJL.md specifies (bit-exact). A block
starts with its stage-1 turbo{b-1} block, so kernels read stage 1 with the plain types' code.

The projection is S = H D3 H D2 (two randomized Walsh-Hadamard rounds), per block of 64:
- per block, not per row: blocks stay independent (any head size that is a multiple of
  64 works, a kernel never looks across blocks), and a sum of unbiased per-block
  estimates is an unbiased estimate of the row's inner product;
- orthonormal rows instead of QJL's Gaussian ones: the estimate's standard deviation is
  1.6x lower (measured on turbo3 residuals: 0.97 against 1.61);
- two rounds, not one: with a single H D2 every entry of S is +-1/8, sign(S r) responds
  nonlinearly to the few large residuals of a block, and the estimate of <x_mse, r> was
  biased by 3.3% (3-bit) to 5.7% (1-bit) of its standard deviation; with two rounds the
  entries spread like a Gaussian's and the bias falls under the noise (docs/REFERENCE.md).
  The second round costs one more 64-point transform per block.

`dequantize` returns x_mse + |r| * TURBO_QJL_SCALE * D2 Hu D3 Hu sign(S r): the unbiased
reconstruction (what V or a copy would read). Its squared error is lower than x_mse's
(one more bit per value) but higher than a 1-bit MSE-optimal code would give: its inner
products with any fixed y are unbiased, x_mse's are shrunk. `dot(q, ...)` is the
inner-product estimate, equal to <q, dequantize(...)> up to rounding.
"""

from __future__ import annotations

import numpy as np

from tqllama.errors import TqError
from tqllama.quant import tables
from tqllama.quant.hadamard import fwht
from tqllama.quant.signs import qjl_signs
from tqllama.quant.turbo import (
    QK,
    TurboQuantMSE,
    pack_bits,
    pack_indices,
    sanitize,
    sub_block_scales,
    unpack_bits,
    unpack_indices,
)

F32 = np.float32
F16_MAX = F32(65504)
D2, D3 = qjl_signs()


def project(v: np.ndarray) -> np.ndarray:
    """Hu (D3 (Hu (D2 v))) per block of 64, Hu the unnormalized +-1 Sylvester matrix (= 64 S).
    In float32 the butterflies run in the order FORMAT-QJL.md fixes."""
    return fwht(
        fwht(v * D2.astype(v.dtype), normalized=False) * D3.astype(v.dtype), normalized=False
    )


def project_transposed(s: np.ndarray) -> np.ndarray:
    """D2 Hu D3 Hu s (= 64 S^T s); exact integers for +-1 inputs."""
    return fwht(fwht(s, normalized=False) * D3.astype(s.dtype), normalized=False) * D2.astype(
        s.dtype
    )


def residual_signs(r: np.ndarray) -> np.ndarray:
    """(n, 64) float32 residuals -> (n, 64) bits, 1 where (S r)_i < 0 (a zero gives 0)."""
    return (project(r) < 0).astype(np.uint8)


def residual_norm(r: np.ndarray) -> np.ndarray:
    """sqrtf of the squared residuals summed in index order, saturated to 65504, to fp16."""
    acc = np.zeros(len(r), dtype=F32)
    for i in range(QK):
        acc = acc + r[:, i] * r[:, i]
    return np.minimum(np.sqrt(acc), F16_MAX).astype(np.float16)


def residual_reconstruction(norm16: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """g * w_i with g = (float) norm * TURBO_QJL_SCALE, w = D2 Hu D3 Hu s, s_i = 1 - 2 bit_i."""
    w = project_transposed(F32(1) - F32(2) * bits.astype(F32))
    g = norm16.astype(F32) * tables.qjl_scale()
    return g[:, None] * w


class TurboQuant:
    """turbo{bits}_qjl: stage 1 at bits - 1, then the QJL signs and the residual norm."""

    def __init__(self, bits: int) -> None:
        if bits not in (2, 3, 4):
            raise TqError(f"turbo_qjl types exist for 2, 3 and 4 bits, not {bits}")
        self.bits = bits
        self.stage1 = TurboQuantMSE(bits - 1)
        self.block_bytes = 2 + 2 + self.stage1.payload_bytes + QK // 8
        self.bits_per_value = 8 * self.block_bytes / QK

    def quantize_blocks(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """(n, 64) -> (scale words, stage-1 indices, fp16 norms, sign bits (n, 64))."""
        x = sanitize(np.asarray(x, dtype=F32).reshape(-1, QK))
        s, idx = self.stage1.quantize_blocks(x)
        r = x - self._stage1_values(s, idx)
        return s, idx, residual_norm(r), residual_signs(r)

    def _stage1_values(self, s: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return (sub_block_scales(s)[:, :, None] * self.stage1.cb.values[idx]).reshape(-1, QK)

    def quantize(self, rows: np.ndarray) -> bytes:
        x = np.asarray(rows, dtype=F32)
        if x.shape[-1] % QK:
            raise TqError(f"row length {x.shape[-1]} is not a multiple of {QK}")
        s, idx, norm16, sbits = self.quantize_blocks(x.reshape(-1, QK))
        out = np.empty((len(s), self.block_bytes), dtype=np.uint8)
        out[:, 0:2] = s.astype("<u2").view(np.uint8).reshape(-1, 2)
        out[:, 2:-10] = pack_indices(idx, self.bits - 1)
        out[:, -10:-8] = norm16.astype("<f2").view(np.uint8).reshape(-1, 2)
        out[:, -8:] = pack_bits(sbits.reshape(-1, 2, 32))
        return out.tobytes()

    def decode_blocks(self, data: bytes, n_values: int) -> tuple[np.ndarray, ...]:
        if n_values % QK or len(data) != n_values // QK * self.block_bytes:
            raise TqError(f"{len(data)} bytes do not hold {n_values} turbo{self.bits}_qjl values")
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, self.block_bytes)
        s = raw[:, 0:2].copy().view("<u2")[:, 0]
        idx = unpack_indices(raw[:, 2:-10], self.bits - 1)
        norm16 = raw[:, -10:-8].copy().view("<f2")[:, 0]
        sbits = unpack_bits(raw[:, -8:]).reshape(-1, QK)
        return s, idx, norm16, sbits

    def dequantize_mse(self, data: bytes, n_values: int) -> np.ndarray:
        """Stage 1 alone: x_mse."""
        s, idx, _, _ = self.decode_blocks(data, n_values)
        return self._stage1_values(s, idx).reshape(-1)

    def dequantize(self, data: bytes, n_values: int) -> np.ndarray:
        """x_mse + the unbiased residual reconstruction, float32, one rounding per step."""
        s, idx, norm16, sbits = self.decode_blocks(data, n_values)
        x_mse = self._stage1_values(s, idx)
        return (x_mse + residual_reconstruction(norm16, sbits)).reshape(-1)

    def dot(self, q: np.ndarray, data: bytes, row_len: int) -> np.ndarray:
        """<q, x> for every stored row of row_len values: <q, x_mse> + g <64 S q, s>.
        `q` is one query for every row, or one query per row. The projected query is
        computed once per query, as a kernel would (float64 here)."""
        n_values = len(data) // self.block_bytes * QK
        if row_len % QK or n_values % row_len:
            raise TqError(f"row length {row_len} does not fit {n_values} stored values")
        s, idx, norm16, sbits = self.decode_blocks(data, n_values)
        x_mse = self._stage1_values(s, idx).reshape(-1, row_len)
        qv = np.asarray(q, dtype=np.float64).reshape(-1, row_len)
        if len(qv) not in (1, len(x_mse)):
            raise TqError(f"{len(qv)} queries for {len(x_mse)} stored rows")
        sq = project(qv.reshape(-1, QK)).reshape(qv.shape)  # 64 S q, per block, once
        g = np.repeat(norm16.astype(np.float64) * float(tables.qjl_scale()), QK)
        signed = ((1.0 - 2.0 * sbits.astype(np.float64)).reshape(-1) * g).reshape(-1, row_len)
        return (x_mse * qv).sum(axis=1) + (signed * sq).sum(axis=1)
