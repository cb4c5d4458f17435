"""A small NumPy forward pass of a llama or qwen2 GGUF that collects K and V.

For measuring quantizers on real cache rows (scripts/dump_kv.py) and for simulating a
quantized cache end to end (tqlab/cache_sim.py): RMSNorm, RoPE as llama.cpp applies it
(NORM mode for llama: adjacent pairs (2i, 2i+1), the GGUF converter already permuted the Q
and K weights for it; NEOX mode for qwen2: pairs (i, i + head_dim/2)), the Q/K/V biases a
qwen2 model has, grouped-query attention with a causal mask (computed a block of queries at
a time, so 8K tokens fit in memory), SiLU-gated MLP, tied or separate output matrix.
Weights are dequantized with gguf.quants; float32 throughout. K is taken after RoPE, V
after its projection: exactly what llama.cpp writes into the KV cache (before the cache
type's own rotation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tqllama.errors import TqError
from tqllama.quant import centring

F32 = np.float32
ARCHS = {"llama": False, "qwen2": True}  # architecture -> NEOX-mode RoPE
QUERY_BLOCK = 512

# A cache's effect on one layer's rows: (layer, rows (T, kv_heads, head_dim)) -> the rows
# attention reads back. K rows come post-RoPE.
RowMap = Callable[[int, np.ndarray], np.ndarray]


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
        if arch not in ARCHS:
            raise TqError(f"{path.name}: architecture {arch!r}, this forward pass knows "
                          f"{', '.join(ARCHS)}")
        self.neox = ARCHS[arch]

        def meta(key: str) -> float:
            return f[f"{arch}.{key}"].contents()

        self.n_layer = int(meta("block_count"))
        self.n_head = int(meta("attention.head_count"))
        self.n_head_kv = int(meta("attention.head_count_kv"))
        self.n_embd = int(meta("embedding_length"))
        self.head_dim = self.n_embd // self.n_head
        self.eps = float(meta("attention.layer_norm_rms_epsilon"))
        self.rope_base = float(meta("rope.freq_base"))
        self._tensors = {t.name: t for t in self.reader.tensors}
        self._weights: dict[str, np.ndarray] = {}

    def weight(self, name: str) -> np.ndarray:
        """Dequantized once: a simulation runs the same weights many times."""
        from gguf.quants import dequantize

        if name not in self._weights:
            t = self._tensors[name]
            self._weights[name] = np.ascontiguousarray(dequantize(t.data, t.tensor_type),
                                                       dtype=F32)
        return self._weights[name]

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        y = x @ self.weight(name + ".weight").T
        return y + self.weight(name + ".bias") if name + ".bias" in self._tensors else y

    def _rms(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + F32(self.eps)) * w).astype(F32)

    def pairs(self, x: np.ndarray) -> np.ndarray:
        """The RoPE pairs of rows (..., head_dim) as complex numbers (..., head_dim/2)."""
        return centring.rope_pairs(x, self.neox)

    def unpairs(self, z: np.ndarray) -> np.ndarray:
        return centring.rope_channels(z, self.neox).astype(F32)

    def phases(self, pos: np.ndarray) -> np.ndarray:
        """e^(i p theta_j) for each position p and pair j, theta_j = base^(-2j/head_dim)."""
        return centring.phases(self.head_dim, self.rope_base, pos)

    def _rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        return self.unpairs(self.pairs(x) * self.phases(pos)[:, None, :])

    def _attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        t, group = len(q), self.n_head // self.n_head_kv
        scale = F32(1 / np.sqrt(self.head_dim))
        out = np.empty_like(q)
        for lo in range(0, t, QUERY_BLOCK):
            hi = min(t, lo + QUERY_BLOCK)
            causal = np.arange(hi)[None, :] <= np.arange(lo, hi)[:, None]
            for j in range(self.n_head_kv):
                heads = slice(j * group, (j + 1) * group)
                s = np.einsum("qhd,kd->hqk", q[lo:hi, heads], k[:hi, j]) * scale
                s = np.where(causal, s, -np.inf)
                s = np.exp(s - s.max(axis=-1, keepdims=True))
                s /= s.sum(axis=-1, keepdims=True)
                out[lo:hi, heads] = np.einsum("hqk,kd->qhd", s, v[:hi, j])
        return out

    def _layers(self, tokens: list[int], k_map: RowMap | None, v_map: RowMap | None,
                keep: bool, queries: int = 0) -> tuple[np.ndarray, list[np.ndarray], ...]:
        """The final hidden states (normed) and, with keep, each layer's exact K and V and
        its first `queries` queries (post-RoPE)."""
        t = len(tokens)
        x = self.weight("token_embd.weight")[np.asarray(tokens)]
        pos = np.arange(t, dtype=np.float64)
        qs, ks, vs = [], [], []
        for il in range(self.n_layer):
            p = f"blk.{il}."
            h = self._rms(x, self.weight(p + "attn_norm.weight"))
            q = self._linear(h, p + "attn_q").reshape(t, self.n_head, self.head_dim)
            k = self._linear(h, p + "attn_k").reshape(t, self.n_head_kv, self.head_dim)
            v = self._linear(h, p + "attn_v").reshape(t, self.n_head_kv, self.head_dim)
            q, k = self._rope(q, pos), self._rope(k, pos)
            if keep:
                qs.append(q[:queries])
                ks.append(k)
                vs.append(v)
            k = k if k_map is None else k_map(il, k).astype(F32)
            v = v if v_map is None else v_map(il, v).astype(F32)
            o = self._attention(q, k, v).reshape(t, self.n_embd)
            x = x + o @ self.weight(p + "attn_output.weight").T
            h = self._rms(x, self.weight(p + "ffn_norm.weight"))
            gate = h @ self.weight(p + "ffn_gate.weight").T
            up = h @ self.weight(p + "ffn_up.weight").T
            x = x + ((gate / (1 + np.exp(-gate))) * up) @ self.weight(p + "ffn_down.weight").T
        return self._rms(x, self.weight("output_norm.weight")), qs, ks, vs

    def output_weight(self) -> np.ndarray:
        tied = "output.weight" not in self._tensors
        return self.weight("token_embd.weight" if tied else "output.weight")

    def log_probs(self, h: np.ndarray) -> np.ndarray:
        """Log-softmax of the logits of final hidden rows h (float64)."""
        logits = (h @ self.output_weight().T).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def hidden(self, tokens: list[int], k_map: RowMap | None = None,
               v_map: RowMap | None = None) -> np.ndarray:
        """The final hidden rows of every position, each layer's K and V through the maps."""
        return self._layers(tokens, k_map, v_map, keep=False)[0]

    def queries_and_keys(self, tokens: list[int], queries: int
                         ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """The exact pass: final hidden rows, each layer's first queries and all its keys."""
        x, qs, ks, _ = self._layers(tokens, None, None, keep=True, queries=queries)
        return x, qs, ks

    def run(self, tokens: list[int]) -> KvDump:
        x, _, ks, vs = self._layers(tokens, None, None, keep=True)
        lp = self.log_probs(x[:-1])
        nll = -lp[np.arange(len(tokens) - 1), np.asarray(tokens[1:])]
        return KvDump(np.asarray(tokens), np.stack(ks), np.stack(vs), nll)


def collect_kv(model: Path, text: Path, n_tokens: int) -> KvDump:
    """The first n_tokens of `text` (tokenized with the GGUF's BPE vocab) through `model`."""
    llama = LlamaGguf(model)
    return llama.run(tokenize(llama, text, n_tokens))


def tokenize(llama: LlamaGguf, text: Path, n_tokens: int) -> list[int]:
    """The first n_tokens of `text` with the GGUF's BPE vocab (as llama-tokenize gives them
    for SmolLM2 and Qwen2.5 on WikiText)."""
    from tqlab.bpe import BpeTokenizer

    tokenizer = BpeTokenizer.from_gguf(llama.reader)
    # newline="": keep the file's bytes (\r\n) as llama.cpp reads them.
    with text.open(encoding="utf-8", newline="") as f:
        tokens = tokenizer.encode(f.read(16 * n_tokens))[:n_tokens]
    if len(tokens) < 2:
        raise TqError(f"{text} gives fewer than 2 tokens")
    return tokens


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
