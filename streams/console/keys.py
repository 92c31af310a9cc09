"""Every Redis key of the console, built here and nowhere else (prefix
``p``, policy ``v``; the queue's Lua scripts get the per-item keys' leading part, ``lease(v, "")``
and so on, and append the item id):
``p:console:users`` (name -> user record), ``p:console:tokens`` (sha256 of an API token -> name),
``p:console:session:{sha256 of the session id}``, ``p:console:throttle:{user|addr}:{who}``,
``p:console:audit`` (a stream), ``p:console:task:{v}:{item}`` (the request as received),
``p:console:queue:{v}`` (item -> priority), ``p:console:requested:{v}`` (item -> requested at),
``p:console:lease:{v}:{item}`` (reviewer -> lease end), ``p:console:holding:{v}:{reviewer}`` (the
item a reviewer holds), ``p:console:skipped:{v}:{reviewer}``, ``p:console:done:{v}:{item}``
(reviewers who answered it, or were asked not to: ``already_labeled_by``),
``p:console:pending`` (label id -> due time), ``p:console:sending`` (label id -> taken at),
``p:console:label:{id}``, ``p:console:undo:{reviewer}``, ``p:console:expired:{v}`` (a counter),
``p:console:labelled`` and ``p:console:labelled:{hour}`` (reviewer -> labels sent)."""

from __future__ import annotations

from dataclasses import dataclass

from streams.service.accounts import tokens_key, users_key

__all__ = ["ConsoleKeys", "text"]


def text(value: object) -> str:
    """A Redis reply as text.

    >>> text(b"alice"), text("bob")
    ('alice', 'bob')
    """
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class ConsoleKeys:
    prefix: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:console"

    @property
    def users(self) -> str:
        return users_key(self.prefix)  # shared with a rebuild from the record

    @property
    def tokens(self) -> str:
        return tokens_key(self.prefix)

    def session(self, digest: str) -> str:
        return f"{self.base}:session:{digest}"

    def user_sessions(self, name: str) -> str:
        return f"{self.base}:sessions-of:{name}"

    def throttle(self, kind: str, who: str) -> str:
        return f"{self.base}:throttle:{kind}:{who}"

    @property
    def audit(self) -> str:
        return f"{self.base}:audit"

    def task(self, policy: str, item_id: str) -> str:
        return f"{self.base}:task:{policy}:{item_id}"

    def queue(self, policy: str) -> str:
        return f"{self.base}:queue:{policy}"

    def requested(self, policy: str) -> str:
        return f"{self.base}:requested:{policy}"

    def lease(self, policy: str, item_id: str) -> str:
        return f"{self.base}:lease:{policy}:{item_id}"

    def holding(self, policy: str, reviewer: str) -> str:
        return f"{self.base}:holding:{policy}:{reviewer}"

    def skipped(self, policy: str, reviewer: str) -> str:
        return f"{self.base}:skipped:{policy}:{reviewer}"

    def done(self, policy: str, item_id: str) -> str:
        return f"{self.base}:done:{policy}:{item_id}"

    @property
    def pending(self) -> str:
        return f"{self.base}:pending"

    @property
    def sending(self) -> str:
        return f"{self.base}:sending"

    def label(self, label_id: str) -> str:
        return f"{self.base}:label:{label_id}"

    def undo(self, reviewer: str) -> str:
        return f"{self.base}:undo:{reviewer}"

    def expired(self, policy: str) -> str:
        return f"{self.base}:expired:{policy}"

    @property
    def options(self) -> str:
        """What leads decide for everyone (``reveal``: reviewers see others' labels after
        submitting)."""
        return f"{self.base}:options"

    @property
    def labelled(self) -> str:
        """reviewer -> labels produced through the console (a hash of counters)."""
        return f"{self.base}:labelled"

    def labelled_in(self, hour: int) -> str:
        """reviewer -> labels given in that hour (hours since the epoch), as ``labelled``."""
        return f"{self.base}:labelled:{hour}"
