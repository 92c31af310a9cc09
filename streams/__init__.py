"""The Kafka side and the assembly layer: settings, topics, message schemas, the faust app and its
agents, metrics, the embedded-services launcher and the CLI. The only package that reads the
environment."""
