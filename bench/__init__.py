"""Benchmarks: ``python -m bench`` measures every figure of issue 7 beside its transport floor, in one run."""
