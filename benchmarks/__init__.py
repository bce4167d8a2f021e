"""Benchmarks (not tests): `just bench [NAME…]`. Results are appended to BENCHMARKS.md by hand."""
