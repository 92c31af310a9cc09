"""The running service: the faust app and its agents (classify, curate, collect), the worker that
assembles them, live adapter swaps and policy following, drift watching, the trainer process and
the metrics. Never imports the tooling (cli, demo, bench) or the embedded services."""
