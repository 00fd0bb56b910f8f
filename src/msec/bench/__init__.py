"""Benchmarks behind ``msec bench``: they print measured figures, they assert nothing."""
