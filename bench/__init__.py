"""Benchmark suite: reverbpy against soketi 1.6.1, one core each (see bench/RESULTS.md)."""
