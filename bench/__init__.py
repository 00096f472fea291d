"""Benchmarks against Hugging Face transformers, measured side by side in one process.

Not tests: nothing here asserts a speed. `python -m bench.run_all` (or `make bench`) runs every
row and writes results/bench.md and results/bench.json; `--quick` is a smoke run of a few seconds.
"""
