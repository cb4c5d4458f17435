"""Cache policy files for the tests on SmolLM2: one with chosen layers, and broken ones with
the line llama.cpp must print for each."""

from __future__ import annotations

from pathlib import Path

from tqllama.policy import Policy

N_LAYER = 30
SMOLLM2_ID = "llama:30:576:3:64:49152:Smollm2 135M 8k Lc100K Mix1 Ep2"


def write_policy(path: Path, model: str = SMOLLM2_ID, k: dict[int, str] | None = None,
                 v: dict[int, str] | None = None) -> Path:
    """turbo4 K and V in every layer but those `k` and `v` name."""
    ks = tuple((k or {}).get(i, "turbo4") for i in range(N_LAYER))
    vs = tuple((v or {}).get(i, "turbo4") for i in range(N_LAYER))
    Policy(model, ks, vs).write(path)
    return path


def broken(tmp_path: Path, how: str) -> tuple[Path, str]:
    """A policy file broken in one way, and the line llama.cpp must print for it."""
    path = write_policy(tmp_path / f"{how}.policy")
    text = path.read_text()
    if how == "other model":
        path.write_text(text.replace(SMOLLM2_ID, "qwen2:24:896:2:64:151936:Qwen2.5 Coder"))
        return path, "the cache policy was made for the model 'qwen2:24:896:2:64:151936:Qwen2.5"
    if how == "unknown type":
        path.write_text(text.replace("layer 3 turbo4", "layer 3 turbo6"))
        return path, "unknown cache type 'turbo6' (make it again with tqllama tune)"
    path.write_text(text[:text.index("layer 20")])
    return path, "ends early (no 'end' line): the file is truncated"
