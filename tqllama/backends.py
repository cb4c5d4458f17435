"""The backends tqllama builds llama.cpp for and runs it on: one build per backend."""

from __future__ import annotations

from tqllama.errors import TqError

BACKENDS = ("cpu", "cuda", "metal")


def check_backend(backend: str) -> None:
    """TqError naming the backends when `backend` is none of them."""
    if backend not in BACKENDS:
        raise TqError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
