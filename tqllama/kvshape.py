"""The KV-cache shape of a GGUF model, as the pinned llama.cpp derives it.

Mirrors `llama_model_base::load_hparams` (src/llama-model.cpp), the per-architecture
`load_arch_hparams` (src/models/*.cpp) for the parts that decide the cache (sliding
windows, layers without their own KV, MLA) and `llama_model::create_memory`, which picks
the cache class. Architectures whose memory is not a plain or sliding-window KV cache
(recurrent state, hybrids, indexer caches) are refused with the reason, not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tqllama.errors import TqError
from tqllama.ggufinfo import GgufFile

# create_memory() gives these no KV cache or a cache this module does not model.
_REFUSED: dict[str, str] = {
    **dict.fromkeys(
        ("bert", "jina-bert-v2", "jina-bert-v3", "nomic-bert", "nomic-bert-moe", "neo-bert",
         "eurobert", "modern-bert", "gemma-embedding", "wavtokenizer-dec", "t5encoder"),
        "is an encoder without a KV cache",
    ),
    **dict.fromkeys(("dream", "llada", "llada-moe", "rnd1"),
                    "is a diffusion model without a KV cache"),
    **dict.fromkeys(("mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"),
                    "keeps a fixed-size recurrent state, not a KV cache"),
    **dict.fromkeys(
        ("jamba", "falcon-h1", "plamo2", "granitehybrid", "lfm2", "lfm2moe", "nemotron_h",
         "nemotron_h_moe", "qwen3next", "kimi-linear", "bailingmoe3", "kimi-k3", "glm5-next",
         "qwen35", "qwen35moe", "qwen4exp", "deepseek4", "minimax-01"),
        "is a hybrid of attention and recurrent layers, which plan does not model yet",
    ),
    **dict.fromkeys(("minimax-m3", "glm-dsa", "deepseek32", "hy_v4", "dots3note", "dflash"),
                    "adds an indexer or compressed cache that plan does not model yet"),
    "t5": "is an encoder-decoder model, which plan does not model yet",
    "gemma4-assistant": "shares its KV cache with the target model's context",
    "graniteswitch": "adds a router layer to the KV cache that plan does not model yet",
    "nanbeige": "may loop its layers, which plan does not model yet",
}


@dataclass(frozen=True)
class _Swa:
    """How one architecture turns sliding-window metadata into per-layer flags."""

    pattern: int | None  # default period of load_swa_pattern(); None: array key required
    dense_first: bool = False
    window: int | None = None  # default window; None: the key is required
    only_if_window: bool = False  # SWA only when the window key is present and > 0
    forced_window: int | None = None  # the code overwrites the window with this value


# load_arch_hparams() of every architecture that sets swa_type != NONE.
_SWA: dict[str, _Swa] = {
    "gemma2": _Swa(2, window=4096),
    "gemma3": _Swa(6, only_if_window=True),
    "gemma3n": _Swa(5),
    "gemma4": _Swa(None),
    "cohere2": _Swa(4),
    "cohere2moe": _Swa(4, dense_first=True),
    "exaone-moe": _Swa(4),
    "afmoe": _Swa(4, only_if_window=True),
    "olmo2": _Swa(4, only_if_window=True),
    "mellum": _Swa(4, only_if_window=True),
    "plamo3": _Swa(8, only_if_window=True),
    "laguna": _Swa(4, dense_first=True, only_if_window=True),
    "smallthinker": _Swa(4, dense_first=True, only_if_window=True, forced_window=4096),
    "gpt-oss": _Swa(2),
    "muse-glimmer": _Swa(4),
    "granite_swa": _Swa(None),
    "maple": _Swa(None),
    "mimo2": _Swa(None),
    "spark2_5": _Swa(None),
    "step35": _Swa(None),
}


@dataclass(frozen=True)
class Layer:
    head_k: int  # n_embd_head_k(il)
    head_v: int
    n_head_kv: int
    swa: bool
    cached: bool  # owns K/V tensors (false: reuses another layer's cache, or MTP-only)

    @property
    def k_width(self) -> int:
        """n_embd_k_gqa(il): the length of one cached K row."""
        return self.head_k * self.n_head_kv

    @property
    def v_width(self) -> int:
        return self.head_v * self.n_head_kv


@dataclass(frozen=True)
class ModelShape:
    arch: str
    n_head: int
    layers: tuple[Layer, ...]  # every block, n_layer_all of them
    n_trunk: int  # n_layer(): the blocks llama.cpp checks head sizes on
    n_swa: int  # window of the SWA layers; 0 without sliding-window attention
    mla: bool  # K-only cache, K and V types must match
    n_ctx_train: int
    weight_bytes: int

    @property
    def swa_kind(self) -> str:
        return "chunked" if self.arch == "llama4" else "sliding"


def model_shape(gguf: GgufFile) -> ModelShape:
    """The KV-relevant hyper-parameters of `gguf`; TqError when it cannot be planned."""
    arch = gguf.architecture
    if arch in _REFUSED:
        raise TqError(f"{gguf.path.name}: architecture {arch!r} {_REFUSED[arch]}; "
                      "plan covers attention models with a KV cache")
    md = _Meta(gguf.metadata, arch)
    missing = [md.key(k) for k in ("block_count", "embedding_length", "attention.head_count")
               if md.key(k) not in gguf.metadata]
    if missing:
        raise TqError(f"{gguf.path.name}: architecture {arch!r} is not one plan knows: "
                      f"missing {', '.join(missing)}; plan needs a transformer GGUF with them")

    n_layer_all = md.int("block_count")
    n_nextn = md.int("nextn_predict_layers", 0)
    n_trunk = n_layer_all - n_nextn
    n_embd = md.int("embedding_length")
    n_head = md.per_layer("attention.head_count", n_layer_all)
    # n_head_kv is optional and defaults to n_head
    n_head_kv = md.per_layer("attention.head_count_kv", n_layer_all, n_head)
    if n_head[0] == 0:
        raise TqError(f"{gguf.path.name}: {md.key('attention.head_count')} is 0, so the model "
                      "has no attention and no KV cache to plan")

    head_k = md.int("attention.key_length", n_embd // n_head[0])
    head_v = md.int("attention.value_length", n_embd // n_head[0])
    head_k_swa = md.int("attention.key_length_swa", head_k)
    head_v_swa = md.int("attention.value_length_swa", head_v)

    swa, n_swa = _swa_layers(md, arch, n_layer_all, n_trunk)
    kv_from_start = _kv_from_start(md, arch, n_layer_all)
    layers = tuple(
        Layer(
            head_k=head_k_swa if swa[il] else head_k,
            head_v=head_v_swa if swa[il] else head_v,
            n_head_kv=n_head_kv[il],
            swa=swa[il],
            # create_memory() filters the MTP (nextn) blocks out of the trunk's cache
            cached=il < kv_from_start and (n_nextn == 0 or n_trunk == 0 or il < n_trunk),
        )
        for il in range(n_layer_all)
    )
    # MLA: both *_length_mla keys present; the cache then holds K (latent + rope) only
    mla = all(md.int(f"attention.{k}_length_mla", 0) != 0 for k in ("key", "value"))
    return ModelShape(
        arch=arch,
        n_head=n_head[0],
        layers=layers,
        n_trunk=n_trunk,
        n_swa=n_swa,
        mla=mla,
        n_ctx_train=md.int("context_length", 0),
        weight_bytes=gguf.weight_bytes,
    )


class _Meta:
    """`<arch>.`-prefixed metadata reads with llama.cpp's defaults."""

    def __init__(self, metadata: dict[str, Any], arch: str) -> None:
        self.metadata = metadata
        self.arch = arch

    def key(self, name: str) -> str:
        return f"{self.arch}.{name}"

    def get(self, name: str) -> Any:
        return self.metadata.get(self.key(name))

    def int(self, name: str, default: int | None = None) -> int:
        value = self.get(name)
        if value is None:
            if default is None:
                raise TqError(f"missing {self.key(name)}: plan needs it to size the KV cache")
            return default
        if isinstance(value, list):
            raise TqError(f"{self.key(name)} is an array where a number was expected: "
                          "re-convert the model")
        return int(value)

    def per_layer(self, name: str, n_layer: int, default: list[int] | None = None) -> list[int]:
        """get_key_or_arr(): one value for all layers, or an array of exactly n_layer."""
        value = self.get(name)
        if value is None:
            if default is None:
                raise TqError(f"missing {self.key(name)}: plan needs it to size the KV cache")
            return list(default)
        if isinstance(value, list):
            if len(value) != n_layer:
                raise TqError(f"{self.key(name)} has {len(value)} entries for {n_layer} layers: "
                              "re-convert the model")
            return [int(v) for v in value]
        return [int(value)] * n_layer


def _swa_layers(md: _Meta, arch: str, n_layer_all: int, n_trunk: int) -> tuple[list[bool], int]:
    """Per-layer SWA flags and the window, as the architecture's load_arch_hparams sets them."""
    none = [False] * n_layer_all, 0
    window = md.get("attention.sliding_window")
    if arch == "llama4":
        # chunked attention unless the window key is present and 0; window fixed at 8192
        if window == 0:
            return none
        return _pattern(md, 4, False, n_layer_all, n_trunk), 8192
    if arch == "exaone4":
        # only the 64-layer (32B) model interleaves; the window key may override 4096
        if n_trunk != 64:
            return none
        return _pattern(md, 4, False, n_layer_all, n_trunk), int(window or 4096)
    rule = _SWA.get(arch)
    if rule is None:
        return none
    if rule.only_if_window and not window:
        return none
    if window is None:
        if rule.window is None:
            raise TqError(f"missing {md.key('attention.sliding_window')}: llama.cpp requires it "
                          f"for {arch}; re-convert the model")
        window = rule.window
    if rule.forced_window is not None:
        window = rule.forced_window
    if rule.pattern is None and not isinstance(md.get("attention.sliding_window_pattern"), list):
        raise TqError(f"missing {md.key('attention.sliding_window_pattern')} (per-layer array): "
                      f"llama.cpp requires it for {arch}; re-convert the model")
    flags = _pattern(md, rule.pattern or 0, rule.dense_first, n_layer_all, n_trunk)
    return flags, int(window)


def _pattern(md: _Meta, n_pattern: int, dense_first: bool, n_layer_all: int,
             n_trunk: int) -> list[bool]:
    """load_swa_pattern(): a per-layer array if present, else a period (key or default)."""
    value = md.get("attention.sliding_window_pattern")
    if isinstance(value, list):
        flags = [bool(v) for v in value[:n_layer_all]]
        return flags + [False] * (n_layer_all - len(flags))
    if value is not None:
        n_pattern = int(value)
    flags = []
    for il in range(n_layer_all):
        if il >= n_trunk:
            flags.append(False)  # set_swa_pattern(): MTP blocks are never SWA
        elif dense_first:
            flags.append(n_pattern == 0 or il % n_pattern != 0)
        else:
            flags.append(n_pattern == 0 or il % n_pattern < n_pattern - 1)
    return flags


def _kv_from_start(md: _Meta, arch: str, n_layer_all: int) -> int:
    """has_kv(): the first layer that reuses an earlier layer's cache instead of its own."""
    if arch == "gemma3n":
        return 20
    if arch == "gemma4":
        return n_layer_all - md.int("attention.shared_kv_layers", 0)
    return n_layer_all
