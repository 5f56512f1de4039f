"""Research tooling: benchmarks and the reproduction of the papers' comparisons."""
