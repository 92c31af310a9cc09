"""One trainer at a time: a lease in Redis. A trainer takes it with ``SET key token NX PX ttl``
(its own random token), renews it every third of the ttl while it works, and deletes it on a
clean exit; renewing and deleting compare the token first (one Lua script each), so a trainer
never extends or drops a lease another one took. A second trainer waits, trying every third of
the ttl, and takes over at most one ttl after the first stopped renewing (killed, wedged, cut
off from Redis). A trainer whose lease was lost (its renewals came too late: a pause longer than
the ttl, or Redis away that long; the next renewal finds the lease lapsed or taken) stops its
work; `TrainerLease.check` before every promotion and rollback makes sure it never acts on the
registry without holding the lease at that moment.

A lease is not a fence: a trainer paused for longer than the ttl between its check and its
write could still act once (Redis has no fencing token); the ttl makes that window a pause of
that length, not a second trainer running beside the first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from models.errors import BorderlineError

__all__ = ["LeaseLost", "TrainerLease", "lease_key"]

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaseLost(BorderlineError):
    """The trainer no longer holds the lease: another one took it."""


def lease_key(prefix: str) -> str:
    return f"{prefix}:trainer:lease"


class TrainerLease:
    def __init__(self, redis: Redis, key: str, *, ttl_s: float, token: str | None = None) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.token = token or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    @property
    def every_s(self) -> float:
        """How often to renew, or to try again while waiting: a third of the ttl."""
        return self.ttl_ms / 3000

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (or renew it if this trainer does)."""
        if await self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return True
        return await self.renew()

    async def renew(self) -> bool:
        return bool(await self.redis.eval(_RENEW, 1, self.key, self.token, self.ttl_ms))

    async def release(self) -> bool:
        return bool(await self.redis.eval(_RELEASE, 1, self.key, self.token))

    async def holder(self) -> str | None:
        value = await self.redis.get(self.key)
        return None if value is None else value.decode() if isinstance(value, bytes) else value

    async def check(self) -> None:
        """Raise `LeaseLost` unless this trainer holds the lease now."""
        holder = await self.holder()
        if holder != self.token:
            raise LeaseLost(f"the trainer lease {self.key} is held by {holder or 'nobody'}")

    async def wait(self, on_wait: Callable[[str | None], None] = lambda _holder: None) -> None:
        """Until this trainer holds the lease; ``on_wait(holder)`` once per holder seen."""
        said: object = object()
        while not await self._try_acquire():
            holder = None
            with contextlib.suppress(Exception):
                holder = await self.holder()
            if holder != said:
                on_wait(holder)
                said = holder
            await asyncio.sleep(self.every_s)

    async def _try_acquire(self) -> bool:
        try:
            return await self.acquire()
        except Exception as exc:  # Redis away: the watchdog decides about outages
            log.warning("trainer lease not taken: %r", exc)
            return False

    async def keep(self) -> None:
        """Renew every third of the ttl; return when a renewal finds the lease gone (lost). A
        Redis that does not answer is no loss: no other trainer can take the lease from it
        either, and the first renewal after it answers again says whether the lease lapsed."""
        while True:
            await asyncio.sleep(self.every_s)
            try:
                if not await self.renew():
                    return
            except Exception as exc:  # the watchdog decides about outages
                log.warning("trainer lease not renewed: %r", exc)

    async def run(self, work: Callable[[], Awaitable[None]]) -> bool:
        """Run ``work`` while renewing the lease, which must be held already. True when the
        work ended (the lease is then released); False when the lease was lost (or the work
        raised `LeaseLost`): the work is cancelled, and the caller waits for the lease again.
        Any other error of the work propagates, after releasing the lease."""
        working = asyncio.ensure_future(work())
        keeping = asyncio.ensure_future(self.keep())
        try:
            await asyncio.wait({working, keeping}, return_when=asyncio.FIRST_COMPLETED)
            if working.done():
                try:
                    working.result()
                except LeaseLost as exc:
                    log.warning("%s: trainer stops and waits", exc)
                    return False
                await self._release_quietly()
                return True
            log.warning("trainer lease %s lost: trainer stops and waits", self.key)
            return False
        except BaseException:  # the work failed, or the trainer is stopping: a clean exit
            await self._release_quietly()
            raise
        finally:
            for task in (working, keeping):
                task.cancel()
            for task in (working, keeping):
                with contextlib.suppress(BaseException):
                    await task

    async def serve(
        self, work: Callable[[], Awaitable[None]], note: Callable[[str], None] = lambda _n: None
    ) -> None:
        """Wait for the lease, run ``work`` holding it (`run`); lost, wait for it again. Returns
        when the work ended. ``note`` hears what the trainer is doing, for its health report."""
        while True:
            note(f"waiting for the trainer lease {self.key}")

            def waiting(holder: str | None) -> None:
                log.info("waiting for the trainer lease %s, held by %s", self.key, holder)
                note(f"waiting for the trainer lease {self.key}, held by {holder}")

            await self.wait(waiting)
            log.info("trainer lease %s taken (%s)", self.key, self.token)
            note(f"holding the trainer lease {self.key}")
            if await self.run(work):
                return

    async def _release_quietly(self) -> None:
        with contextlib.suppress(Exception):  # a lease not released lapses after its ttl
            await self.release()
