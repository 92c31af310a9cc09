"""The embedded services for dev, tests and the demo: a tansu broker and a redis-server on free
loopback ports, and the launcher that starts worker processes against them."""
