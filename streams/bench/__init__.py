"""The benchmarks (`borderline bench ...`): stream throughput, live swaps, label efficiency and
the adaptation scenario. Each prints its figures and writes them as JSON."""
