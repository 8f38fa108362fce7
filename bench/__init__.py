"""GPU and CPU benchmarks, executed-FLOP counters, provenance of results, and the `sixn` CLI."""
