"""Stage "collect": what the experts said. Agreement and reviewer exclusion, consensus and the
train/eval split (pure), labelled datasets, and the Redis label store (`store.py`, the only
module here that does I/O)."""
