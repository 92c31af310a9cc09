"""`borderline`, the command line: parses arguments, reads the settings once, and calls into the
service, the embedded services, the demo and the benchmarks."""
