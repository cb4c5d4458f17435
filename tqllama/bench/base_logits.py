"""The f16-cache logits that `--kl-divergence` runs compare against, cached across sweeps.

llama-perplexity `--kl-divergence-base FILE` writes, per chunk, the log-probabilities of
the scored half of the context as uint16 over the whole vocabulary: hundreds of MB even
for a small sweep. They are keyed by what determines them (binary, model, text, ctx,
chunks), kept least-recently-used under a size limit (`$TQLLAMA_KLD_CACHE_GB`, default
20), and removed by `tqllama bench clean`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tqllama import paths
from tqllama.errors import TqError

DEFAULT_LIMIT_GB = 20.0
_SUFFIX = ".kld"
# Room left on the disk besides the file itself: logs, results, the OS.
_DISK_MARGIN = 256 << 20


def cache_root() -> Path:
    return paths.cache_dir() / "kld-base"


def path_for(key: str) -> Path:
    return cache_root() / f"{key[:24]}{_SUFFIX}"


def expected_bytes(n_chunks: int, n_ctx: int, n_vocab: int) -> int:
    """Size of the file llama-perplexity writes (perplexity.cpp: header, tokens, log-probs)."""
    header = 8 + 4 + 4 + 4  # "_logits_", n_ctx, n_vocab, n_chunk
    tokens = n_chunks * n_ctx * 4
    row = 2 * ((n_vocab + 1) // 2) + 4  # uint16 values per scored token, with its min/max
    scored = n_ctx - 1 - n_ctx // 2
    return header + tokens + n_chunks * scored * row * 2


def check_disk(target: Path, size: int) -> None:
    """TqError before writing `size` bytes at `target` when the disk cannot hold them."""
    target.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target.parent).free
    if free < size + _DISK_MARGIN:
        raise TqError(
            f"the f16 base logits need {size / 2**20:.0f} MiB but {target.parent} has "
            f"{free / 2**20:.0f} MiB free: lower --chunks, run `tqllama bench clean`, or set "
            "TQLLAMA_CACHE to a bigger disk"
        )


def limit_bytes() -> int:
    raw = os.environ.get("TQLLAMA_KLD_CACHE_GB", str(DEFAULT_LIMIT_GB))
    try:
        return int(float(raw) * 2**30)
    except ValueError:
        raise TqError(f"TQLLAMA_KLD_CACHE_GB={raw!r} is not a number of GB: fix or unset it") \
            from None


def touch(path: Path) -> None:
    """Mark `path` as just used (eviction goes by modification time)."""
    os.utime(path)


def evict(keep: Path) -> list[Path]:
    """Remove the least recently used files beyond the limit, never `keep`; return them."""
    files = sorted(cache_root().glob(f"*{_SUFFIX}"), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in files)
    removed = []
    for path in files:
        if total <= limit_bytes():
            break
        if path == keep:
            continue
        total -= path.stat().st_size
        path.unlink()
        removed.append(path)
    return removed


def clean() -> tuple[int, int]:
    """Remove every cached base-logits file (and any left half-written); (files, bytes)."""
    count = size = 0
    root = cache_root()
    if root.is_dir():
        for path in root.iterdir():
            if path.is_file():
                size += path.stat().st_size
                path.unlink()
                count += 1
    return count, size
