"""Benchmarks: each script prints its figures and ratios."""
