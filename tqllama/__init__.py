"""tqllama: TurboQuant KV-cache types for a pinned llama.cpp."""

__version__ = "0.1.0"
