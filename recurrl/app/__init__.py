"""The applications on top of a run: the ``recurrl`` CLI, plots, suites, videos, benchmarks."""
