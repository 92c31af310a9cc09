"""Outages as a process sees them: which target (the broker, Redis) has been unreachable since
when, how many calls failed, and what is said about it. Every retry loop of a process reports to
one `Outages`, so concurrent callers share one outage: its first failure is logged, then one
summary per interval with the count, then one line when it ends; never one line per attempt.
`ThrottledLogs` does the same for the libraries' own log lines (aiokafka logs every failed
connection attempt). When the budget is spent the error is one `InfrastructureError` line that
names the target and how long it was unreachable."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from models.errors import BorderlineError
from streams.wire.settings import Settings

__all__ = [
    "InfrastructureError",
    "Outages",
    "Throttle",
    "ThrottledLogs",
    "target_names",
    "throttled_logs",
]

log = logging.getLogger(__name__)


class InfrastructureError(BorderlineError):
    """The broker or Redis stayed unreachable for the whole outage budget."""


@dataclass(frozen=True)
class Throttle:
    """Lets the first of a run of similar events through, then at most one per ``every_s``,
    counting those held back in between.

    >>> t = Throttle(every_s=10.0, shown_at=0.0)  # the first event, shown at t=0
    >>> t, held = t.event(now=3.0)
    >>> held is None  # held back
    True
    >>> t, held = t.event(now=10.0)
    >>> held  # shown, saying one was held back since the last
    1
    """

    every_s: float
    shown_at: float
    held: int = 0

    def event(self, now: float) -> tuple[Throttle, int | None]:
        """The throttle after one more event at ``now``, and, when this one is shown, how many
        were held back since the last shown (None: hold this one back)."""
        if now - self.shown_at >= self.every_s:
            return Throttle(self.every_s, now), self.held
        return replace(self, held=self.held + 1), None


@dataclass
class _Down:
    since: float
    failures: int
    error: str
    throttle: Throttle


class Outages:
    """One process's record of unreachable targets, shared by its retry loops, its watchdog and
    its control plane. ``names`` says what a target is in a log line (e.g. ``"redis"`` ->
    ``"Redis at 127.0.0.1:6379"``); ``clock`` is monotonic seconds."""

    def __init__(
        self,
        *,
        log_every_s: float = 10.0,
        names: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self.log_every_s = log_every_s
        self.names = dict(names or {})
        self.clock = clock
        self.log = logger
        self._down: dict[str, _Down] = {}

    def name(self, target: str) -> str:
        return self.names.get(target, target)

    def down_for(self, target: str) -> float | None:
        """Seconds ``target`` has been unreachable (None: it is not)."""
        down = self._down.get(target)
        return None if down is None else self.clock() - down.since

    def failed(self, target: str, error: BaseException, *, since: float | None = None) -> float:
        """A call to ``target`` failed with ``error`` (the call began at ``since``, default now);
        returns how long the target has been unreachable. Logs the first failure of an outage,
        then a summary at most once per ``log_every_s``."""
        now = self.clock()
        text = _one_line(error)
        down = self._down.get(target)
        if down is None:
            start = now if since is None else min(since, now)
            self._down[target] = _Down(start, 1, text, Throttle(self.log_every_s, now))
            self.log.warning(
                "%s unreachable (%s); retrying with backoff, summaries every %g s",
                self.name(target),
                text,
                self.log_every_s,
            )
            return now - start
        down.failures += 1
        down.error = text
        down.throttle, held = down.throttle.event(now)
        if held is not None:
            self.log.warning(
                "%s still unreachable after %.0f s: %d failed calls, last error %s",
                self.name(target),
                now - down.since,
                down.failures,
                text,
            )
        return now - down.since

    def succeeded(self, target: str) -> None:
        """A call to ``target`` succeeded: an outage, if there was one, is over (one line)."""
        down = self._down.pop(target, None)
        if down is not None:
            self.log.warning(
                "%s reachable again after %.1f s (%d failed calls)",
                self.name(target),
                self.clock() - down.since,
                down.failures,
            )

    def error(self, target: str, budget_s: float) -> InfrastructureError:
        """The one line a process exits with when ``target`` outlasted the budget."""
        down = self._down.get(target)
        seconds = 0.0 if down is None else self.clock() - down.since
        last = "" if down is None else f"; {down.failures} failed calls, last error {down.error}"
        return InfrastructureError(
            f"{self.name(target)} unreachable for {seconds:.1f} s "
            f"(outage budget {budget_s:g} s{last})"
        )


def _one_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return " ".join(text.split())[:300]


class ThrottledLogs(logging.Filter):
    """A filter for a log handler: of WARNING-or-worse records from the same logger that say the
    same thing, the first passes, then one per ``every_s`` that says how many were held back.
    Lower levels, and lines that differ (two adapters refused), pass untouched. One instance per
    handler."""

    MAX_KINDS = 1000

    def __init__(self, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.every_s = every_s
        self.clock = clock
        self._seen: dict[tuple[str, int, str], Throttle] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.getMessage())
        now = self.clock()
        throttle = self._seen.get(key)
        if throttle is None:
            if len(self._seen) >= self.MAX_KINDS:
                self._forget(now)
            self._seen[key] = Throttle(self.every_s, now)
            return True
        self._seen[key], held = throttle.event(now)
        if held is None:
            return False
        if held:
            note = f" [{held} more like this in the last {now - throttle.shown_at:.0f} s]"
            record.msg = str(record.msg) + (note.replace("%", "%%") if record.args else note)
        return True

    def _forget(self, now: float) -> None:
        for key, throttle in list(self._seen.items()):
            if now - throttle.shown_at >= self.every_s:
                del self._seen[key]

    @classmethod
    def install(
        cls,
        every_s: float,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> list[tuple[logging.Handler, ThrottledLogs]]:
        """Add a filter to every handler of ``logger`` (the root by default) that has none yet;
        returns where it went, for `uninstall`."""
        added = []
        for handler in (logger or logging.getLogger()).handlers:
            if not any(isinstance(f, ThrottledLogs) for f in handler.filters):
                throttled = cls(every_s, clock)
                handler.addFilter(throttled)
                added.append((handler, throttled))
        return added

    @staticmethod
    def uninstall(added: list[tuple[logging.Handler, ThrottledLogs]]) -> None:
        for handler, throttled in added:
            handler.removeFilter(throttled)


@contextmanager
def throttled_logs(every_s: float) -> Iterator[None]:
    """`ThrottledLogs` on the root handlers for the duration of a ``with`` block."""
    added = ThrottledLogs.install(every_s)
    try:
        yield
    finally:
        ThrottledLogs.uninstall(added)


def target_names(settings: Settings) -> dict[str, str]:
    """What "kafka" and "redis" are in this process's log lines, without any password.

    >>> s = Settings.model_validate(
    ...     {"kafka": {"bootstrap_servers": "k:9092"}, "redis": {"url": "redis://:pw@r:6379/0"}}
    ... )
    >>> target_names(s)
    {'kafka': 'the broker at k:9092', 'redis': 'Redis at r:6379'}
    """
    names = {"kafka": f"the broker at {settings.kafka.bootstrap_servers}"}
    if settings.redis.url is not None:
        url = urlsplit(settings.redis.url.get_secret_value())
        where = url.path if url.scheme == "unix" else f"{url.hostname}:{url.port or 6379}"
        names["redis"] = f"Redis at {where}"
    return names
