"""Benchmarks of orchestratord (not tests): `python -m bench <name>`, results in RESULTS.md."""
