"""Benchmark harness (Im2GPS3k, YFCC4k, custom sets). Not part of this version yet."""
