"""The Kafka side and the assembly layer. `service/` is the running loop (the faust app and its
agents, live swaps, the collector, the trainer); `wire/` is what travels (messages, topics,
settings); `embedded/` the local broker, Redis and process launcher; `cli/`, `demo/` and `bench/`
the tooling that starts, demonstrates and measures it. The only package that reads the
environment."""
