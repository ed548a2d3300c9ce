"""Benchmarks: each prints its figure and, where a baseline is named, the ratio (DESIGN §11)."""
