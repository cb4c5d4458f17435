"""Benchmarks: run llama-perplexity and llama-bench over cache types, store, tabulate, plot."""
