"""Benchmarks (``recurrl bench NAME``, or ``python -m recurrl.app.bench.NAME``)."""
