"""The lab: what the tests and scripts/ use to exercise tqllama, kept out of its wheel.

Synthetic GGUF models (synth), the built ggml libraries through ctypes (ggmllib), a NumPy
llama forward pass and its BPE tokenizer (llama_forward, bpe), a scalar transliteration
of the format docs (quant_spec), a fake llama.cpp tree (fake_llama), AArch64 programs
cross-built with zig and run under emulation (aarch64), and the helpers test modules share
(bitexact, tools, server). Importable from a checkout: pytest puts the
repository root on sys.path (pyproject's `pythonpath`); scripts run with PYTHONPATH=.
"""
