"""Benchmarks: scripts that print JSON. Figures in README.md come from these."""
