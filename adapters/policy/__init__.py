"""Versioned moderation policies: the schema and its strict YAML loader (pure), the message form
announced on the policy topic, and the Redis store of published versions (`store.py`)."""
