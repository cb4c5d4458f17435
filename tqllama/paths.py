"""Where tqllama keeps downloads, source trees, builds and results."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """`$TQLLAMA_CACHE`, else `~/.cache/tqllama`; created on first use."""
    root = os.environ.get("TQLLAMA_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "tqllama"
    path.mkdir(parents=True, exist_ok=True)
    return path


def ggml_src_dir() -> Path:
    """The project's own ggml sources, laid over the pinned tree at the same paths."""
    return REPO_ROOT / "ggml-src"


def patches_dir() -> Path:
    return REPO_ROOT / "patches"
