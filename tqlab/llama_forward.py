"""A small NumPy forward pass of a llama-architecture GGUF that collects K and V.

For measuring quantizers on real cache rows (scripts/dump_kv.py): RMSNorm, RoPE in
llama.cpp's NORM mode (adjacent pairs (2i, 2i+1); the GGUF converter already permuted
the Q and K weights for it), grouped-query attention with a causal mask, SiLU-gated MLP,
tied or separate output matrix. Weights are dequantized with gguf.quants; float32
throughout. K is taken after RoPE, V after its projection: exactly what llama.cpp
writes into the KV cache (before the cache type's own rotation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tqllama.errors import TqError

F32 = np.float32


@dataclass(frozen=True)
class KvDump:
    tokens: np.ndarray  # (T,) int
    k: np.ndarray  # (layers, T, kv_heads, head_dim) float32, post-RoPE
    v: np.ndarray  # (layers, T, kv_heads, head_dim) float32
    nll: np.ndarray  # (T - 1,) next-token negative log-likelihoods: a sanity check


class LlamaGguf:
    def __init__(self, path: Path) -> None:
        from gguf import GGUFReader

        self.reader = GGUFReader(str(path))
        f = self.reader.fields
        arch = f["general.architecture"].contents()
        if arch != "llama":
            raise TqError(f"{path.name}: architecture {arch!r}, this forward pass is llama only")

        def meta(key: str) -> float:
            return f[f"llama.{key}"].contents()

        self.n_layer = int(meta("block_count"))
        self.n_head = int(meta("attention.head_count"))
        self.n_head_kv = int(meta("attention.head_count_kv"))
        self.n_embd = int(meta("embedding_length"))
        self.head_dim = self.n_embd // self.n_head
        self.eps = float(meta("attention.layer_norm_rms_epsilon"))
        self.rope_base = float(meta("rope.freq_base"))
        self._tensors = {t.name: t for t in self.reader.tensors}

    def weight(self, name: str) -> np.ndarray:
        from gguf.quants import dequantize

        t = self._tensors[name]
        return np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype=F32)

    def _rms(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + F32(self.eps)) * w).astype(F32)

    def _rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """NORM mode: rotate (x[2i], x[2i+1]) by pos * base^(-2i/head_dim)."""
        half = self.head_dim // 2
        theta = pos[:, None] * self.rope_base ** (-np.arange(half) * 2.0 / self.head_dim)
        cos = np.cos(theta)[:, None, :].astype(F32)
        sin = np.sin(theta)[:, None, :].astype(F32)
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    def run(self, tokens: list[int]) -> KvDump:
        t = len(tokens)
        emb = self.weight("token_embd.weight")
        x = emb[np.asarray(tokens)]
        pos = np.arange(t, dtype=np.float64)
        mask = np.triu(np.full((t, t), -np.inf, dtype=F32), k=1)
        group = self.n_head // self.n_head_kv
        ks, vs = [], []
        for il in range(self.n_layer):
            p = f"blk.{il}."
            h = self._rms(x, self.weight(p + "attn_norm.weight"))
            q = (h @ self.weight(p + "attn_q.weight").T).reshape(t, self.n_head, self.head_dim)
            k = (h @ self.weight(p + "attn_k.weight").T).reshape(t, self.n_head_kv, self.head_dim)
            v = (h @ self.weight(p + "attn_v.weight").T).reshape(t, self.n_head_kv, self.head_dim)
            q, k = self._rope(q, pos), self._rope(k, pos)
            ks.append(k)
            vs.append(v)
            kk = np.repeat(k, group, axis=1)
            vv = np.repeat(v, group, axis=1)
            scores = np.einsum("qhd,khd->hqk", q, kk) / F32(np.sqrt(self.head_dim)) + mask
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            att = scores / scores.sum(axis=-1, keepdims=True)
            o = np.einsum("hqk,khd->qhd", att, vv).reshape(t, self.n_embd)
            x = x + o @ self.weight(p + "attn_output.weight").T
            h = self._rms(x, self.weight(p + "ffn_norm.weight"))
            gate = h @ self.weight(p + "ffn_gate.weight").T
            up = h @ self.weight(p + "ffn_up.weight").T
            x = x + ((gate / (1 + np.exp(-gate))) * up) @ self.weight(p + "ffn_down.weight").T
        x = self._rms(x, self.weight("output_norm.weight"))
        out_w = self.weight("output.weight") if "output.weight" in self._tensors else emb
        logits = (x[:-1] @ out_w.T).astype(np.float64)
        logz = logits.max(axis=1) + np.log(
            np.exp(logits - logits.max(axis=1, keepdims=True)).sum(1)
        )
        nll = logz - logits[np.arange(t - 1), np.asarray(tokens[1:])]
        return KvDump(np.asarray(tokens), np.stack(ks), np.stack(vs), nll)


def collect_kv(model: Path, text: Path, n_tokens: int) -> KvDump:
    """The first n_tokens of `text` (tokenized with the GGUF's BPE vocab) through `model`."""
    from tqlab.bpe import BpeTokenizer

    llama = LlamaGguf(model)
    tokenizer = BpeTokenizer.from_gguf(llama.reader)
    # newline="": keep the file's bytes (\r\n) as llama.cpp reads them.
    with text.open(encoding="utf-8", newline="") as f:
        tokens = tokenizer.encode(f.read(16 * n_tokens))[:n_tokens]
    if len(tokens) < 2:
        raise TqError(f"{text} gives fewer than 2 tokens")
    return llama.run(tokens)


def kv_cache_path(model: Path, n_tokens: int) -> Path:
    """Where scripts/dump_kv.py keeps a model's K and V rows (never in the repo)."""
    from tqllama.paths import cache_dir

    return cache_dir() / "kv" / f"{model.stem}-{n_tokens}.npz"


def save(dump: KvDump, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, tokens=dump.tokens, k=dump.k, v=dump.v, nll=dump.nll)


def load(path: Path) -> KvDump:
    with np.load(path) as z:
        return KvDump(z["tokens"], z["k"], z["v"], z["nll"])
