"""Benchmark scripts (run as ``python -m recurrl.bench.<name>``); not imported by the toolkit."""
