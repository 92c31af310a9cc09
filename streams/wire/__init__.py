"""What travels between processes: message schemas, topic names, and the typed settings read once
at start-up. The ground floor of `streams`."""
