"""Synthetic GGUF models: random weights in shapes no small real model ships.

Tests use them to run llama.cpp on head sizes 64/128/256 (and unsupported ones like 80),
GQA, sliding-window layers (gemma3) and MLA (deepseek2), in files of a few MB. The
tokenizer is a minimal SentencePiece ("llama") vocab: <unk>, <s>, </s>, the 256 byte
tokens that byte fallback needs (so any text tokenizes), the space marker and printable
ASCII, then filler pieces.
Same arguments and seed give the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, TokenType

from tqllama.errors import TqError

ARCHS = ("llama", "gemma3", "deepseek2")

_N_FIXED = 3 + 256 + 1 + 94  # <unk> <s> </s>, <0x00>..<0xFF>, the space marker, ASCII 33-126


@dataclass(frozen=True)
class Spec:
    """What write_model() builds; head_dim defaults to n_embd / n_head."""

    arch: str = "llama"
    n_embd: int = 256
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int | None = None  # GQA when smaller than n_head; default n_head
    head_dim: int | None = None
    n_ff: int | None = None  # default n_embd: the FFN does not matter for the cache
    n_vocab: int = 512
    n_ctx_train: int = 8192
    dtype: str = "f16"  # matrices; norms are always f32, as convert_hf_to_gguf writes them
    sliding_window: int = 0  # gemma3 only; 0: every layer attends to the full context
    swa_pattern: int | None = None  # gemma3: every n-th layer is full (llama.cpp default 6)
    kv_lora_rank: int = 128  # deepseek2 (MLA): K cache width = kv_lora_rank + rope_dim
    rope_dim: int = 64  # deepseek2
    seed: int = 0

    @property
    def head(self) -> int:
        return self.head_dim or self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_head_kv or self.n_head

    @property
    def ff(self) -> int:
        return self.n_ff or self.n_embd


def write_model(path: str | Path, **fields: object) -> Path:
    """Write a synthetic GGUF model to `path`; keyword arguments are Spec's fields."""
    spec = Spec(**fields)  # type: ignore[arg-type]
    _check(spec)
    path = Path(path)
    rng = np.random.default_rng(spec.seed)
    writer = GGUFWriter(path, spec.arch)
    writer.add_name(f"synthetic {spec.arch} head {spec.head}")
    writer.add_context_length(spec.n_ctx_train)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_feed_forward_length(spec.ff)
    writer.add_head_count(spec.n_head)
    # MLA caches one shared latent "head"
    writer.add_head_count_kv(1 if spec.arch == "deepseek2" else spec.kv_heads)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_file_type(1 if spec.dtype == "f16" else 0)
    _ARCH_KEYS[spec.arch](writer, spec)
    _add_vocab(writer, spec.n_vocab)

    def mat(name: str, *shape: int) -> None:
        # numpy order is the reverse of ggml's: (rows, row length)
        w = rng.standard_normal(shape[::-1], dtype=np.float32) * 0.02
        writer.add_tensor(name, w.astype(np.float16 if spec.dtype == "f16" else np.float32))

    def norm(name: str, n: int) -> None:
        writer.add_tensor(name, np.ones(n, dtype=np.float32))

    mat("token_embd.weight", spec.n_embd, spec.n_vocab)
    norm("output_norm.weight", spec.n_embd)
    mat("output.weight", spec.n_embd, spec.n_vocab)
    for il in range(spec.n_layer):
        blk = f"blk.{il}."
        norm(blk + "attn_norm.weight", spec.n_embd)
        _ARCH_ATTN[spec.arch](spec, blk, mat, norm)
        norm(blk + "ffn_norm.weight", spec.n_embd)
        mat(blk + "ffn_gate.weight", spec.n_embd, spec.ff)
        mat(blk + "ffn_up.weight", spec.n_embd, spec.ff)
        mat(blk + "ffn_down.weight", spec.ff, spec.n_embd)
        if spec.arch == "gemma3":
            norm(blk + "post_attention_norm.weight", spec.n_embd)
            norm(blk + "post_ffw_norm.weight", spec.n_embd)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_metadata(path: str | Path, arch: str, keys: dict[str, int | list[int] | list[bool]]
                   ) -> Path:
    """A GGUF with only `<arch>.<key>` metadata and no tensors: enough for the planner.

    Lists become arrays (element type from the first item), numbers uint32.
    """
    path = Path(path)
    writer = GGUFWriter(path, arch)
    for key, value in keys.items():
        if isinstance(value, list):
            writer.add_array(f"{arch}.{key}", value)
        else:
            writer.add_uint32(f"{arch}.{key}", value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _check(spec: Spec) -> None:
    if spec.arch not in ARCHS:
        raise TqError(f"synthetic arch {spec.arch!r} is not one of {', '.join(ARCHS)}")
    if spec.dtype not in ("f16", "f32"):
        raise TqError(f"synthetic dtype {spec.dtype!r}: use f16 or f32")
    if spec.n_head % spec.kv_heads:
        raise TqError(f"n_head {spec.n_head} is not a multiple of n_head_kv {spec.kv_heads}")
    if spec.sliding_window and spec.arch != "gemma3":
        raise TqError("sliding_window needs arch='gemma3' (llama has no sliding-window layers)")
    if spec.n_vocab < _N_FIXED:
        raise TqError(f"n_vocab must be at least {_N_FIXED} (special, byte and ASCII tokens)")


MatFn = Callable[..., None]
NormFn = Callable[[str, int], None]


def _llama_keys(w: GGUFWriter, spec: Spec) -> None:
    w.add_key_length(spec.head)
    w.add_value_length(spec.head)
    w.add_rope_dimension_count(spec.head)  # llama.cpp requires n_rot == head size for llama


def _gemma3_keys(w: GGUFWriter, spec: Spec) -> None:
    w.add_key_length(spec.head)
    w.add_value_length(spec.head)
    if spec.sliding_window:
        w.add_sliding_window(spec.sliding_window)
        if spec.swa_pattern is not None:
            w.add_sliding_window_pattern(spec.swa_pattern)


def _deepseek2_keys(w: GGUFWriter, spec: Spec) -> None:
    # the MLA layout convert_hf_to_gguf writes: one KV "head" of latent + rope dims
    w.add_key_length(spec.kv_lora_rank + spec.rope_dim)
    w.add_value_length(spec.kv_lora_rank)
    w.add_key_length_mla(spec.head + spec.rope_dim)
    w.add_value_length_mla(spec.head)
    w.add_rope_dimension_count(spec.rope_dim)
    w.add_kv_lora_rank(spec.kv_lora_rank)
    w.add_q_lora_rank(0)  # plain wq instead of the low-rank Q projection
    w.add_leading_dense_block_count(spec.n_layer)  # dense FFN everywhere: no experts
    w.add_expert_feed_forward_length(spec.ff)
    w.add_expert_shared_count(0)


def _mha(spec: Spec, blk: str, mat: MatFn, norm: NormFn) -> None:
    mat(blk + "attn_q.weight", spec.n_embd, spec.head * spec.n_head)
    mat(blk + "attn_k.weight", spec.n_embd, spec.head * spec.kv_heads)
    mat(blk + "attn_v.weight", spec.n_embd, spec.head * spec.kv_heads)
    mat(blk + "attn_output.weight", spec.head * spec.n_head, spec.n_embd)
    if spec.arch == "gemma3":
        norm(blk + "attn_q_norm.weight", spec.head)
        norm(blk + "attn_k_norm.weight", spec.head)


def _mla(spec: Spec, blk: str, mat: MatFn, norm: NormFn) -> None:
    # head = the "nope" part of a decompressed head; Q heads add the rope part
    qk = spec.head + spec.rope_dim
    mat(blk + "attn_q.weight", spec.n_embd, spec.n_head * qk)
    mat(blk + "attn_kv_a_mqa.weight", spec.n_embd, spec.kv_lora_rank + spec.rope_dim)
    norm(blk + "attn_kv_a_norm.weight", spec.kv_lora_rank)
    mat(blk + "attn_k_b.weight", spec.head, spec.kv_lora_rank, spec.n_head)
    mat(blk + "attn_v_b.weight", spec.kv_lora_rank, spec.head, spec.n_head)
    mat(blk + "attn_output.weight", spec.n_head * spec.head, spec.n_embd)


_ARCH_KEYS = {"llama": _llama_keys, "gemma3": _gemma3_keys, "deepseek2": _deepseek2_keys}
_ARCH_ATTN = {"llama": _mha, "gemma3": _mha, "deepseek2": _mla}


def _add_vocab(w: GGUFWriter, n_vocab: int) -> None:
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    types += [TokenType.BYTE] * 256
    # the space marker and printable ASCII as pieces: llama.cpp's byte fallback is
    # quadratic in the text (6+ minutes for WikiText-2 test), pieces keep it at a second
    pieces = ["\u2581", *(chr(c) for c in range(33, 127))]
    tokens += pieces
    types += [TokenType.NORMAL] * len(pieces)
    tokens += [f"\u2581w{i}" for i in range(n_vocab - len(tokens))]
    types += [TokenType.NORMAL] * (n_vocab - len(types))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([-float(i) for i in range(n_vocab)])
    w.add_token_types([int(t) for t in types])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
