"""The errors of what travels: a message that cannot be processed carries a stable, low-cardinality
reason (it becomes a metric label and the dead letter's reason) and a detail naming the value."""

from __future__ import annotations

from models.errors import BorderlineError

__all__ = ["MessageError"]


class MessageError(BorderlineError):
    """A message that cannot be processed. ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
