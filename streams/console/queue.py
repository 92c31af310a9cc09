"""The review queue the console serves: the review requests of a policy version, highest priority
first, each opinion claimed with a lease so two reviewers never work on the same one.

Fed from ``moderation.review.requested`` (`streams.console.feed`): the request as sent (priority,
boundary partner, evidence, who already labelled it) is kept per item. A claim, a submission, an
undo and a release are each one Lua script, so they are atomic across console replicas. Rules:
a reviewer holds one task at a time (claiming again returns it); an expired lease returns the
opinion to the queue; a reviewer never gets an item they labelled (through the console, through
any client, or named in ``already_labeled_by``), nor one they skipped (for an hour); an item
closes when it has as many opinions as wanted (the request's, at least ``opinions``: a second
opinion request asks for one more than it has). Requests older than ``max_age_s`` are closed as
expired, in the label store's open set too, so unanswered requests can never jam curation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from adapters.labels.store import LabelKeys
from streams.console.keys import ConsoleKeys, text
from streams.wire.messages import ReviewRequest

__all__ = ["ClaimedTask", "TaskQueue"]

SKIP_TTL_S = 3600

# Clean an item's expired leases; say how many are live and whether `reviewer` holds one.
_LEASES = """
local function leases(key, reviewer, now)
  local raw = redis.call('HGETALL', key)
  local live, mine = 0, false
  for i = 1, #raw, 2 do
    if tonumber(raw[i + 1]) <= now then
      redis.call('HDEL', key, raw[i])
    else
      live = live + 1
      if raw[i] == reviewer then mine = true end
    end
  end
  return live, mine
end
local function opinions(done, votes)
  local have = redis.call('SCARD', done)
  for _, r in ipairs(redis.call('HKEYS', votes)) do
    if redis.call('SISMEMBER', done, r) == 0 then have = have + 1 end
  end
  return have
end
"""

# KEYS: queue, holding, skipped, requested. ARGV: reviewer, now, lease end, scan, lease prefix, done
# prefix, task prefix, votes prefix, lease ms.
_CLAIM = (
    _LEASES
    + """
local reviewer, now, lease_end = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local held = redis.call('GET', KEYS[2])
if held then
  local _, mine = leases(ARGV[5] .. held, reviewer, now)
  local request = redis.call('HGET', ARGV[7] .. held, 'request')
  if mine and request then return {held, 'held', request} end
  redis.call('DEL', KEYS[2])
end
for _, item in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[4]) - 1)) do
  local task, done, votes = ARGV[7] .. item, ARGV[6] .. item, ARGV[8] .. item
  if redis.call('EXISTS', task) == 0 then
    redis.call('ZREM', KEYS[1], item)
    redis.call('ZREM', KEYS[4], item)
  else
    local live, mine = leases(ARGV[5] .. item, reviewer, now)
    if mine then  -- e.g. held before an undo gave back another item
      redis.call('SET', KEYS[2], item, 'PX', ARGV[9])
      return {item, 'held', redis.call('HGET', task, 'request')}
    end
    if redis.call('HEXISTS', votes, reviewer) == 1 then redis.call('SADD', done, reviewer) end
    local have = opinions(done, votes)
    local wanted = tonumber(redis.call('HGET', task, 'wanted') or '1')
    if have >= wanted then
      redis.call('ZREM', KEYS[1], item)
      redis.call('ZREM', KEYS[4], item)
    elseif redis.call('SISMEMBER', done, reviewer) == 0
        and redis.call('SISMEMBER', KEYS[3], item) == 0 and live + have < wanted then
      redis.call('HSET', ARGV[5] .. item, reviewer, lease_end)
      redis.call('SET', KEYS[2], item, 'PX', ARGV[9])
      return {item, 'new', redis.call('HGET', task, 'request')}
    end
  end
end
return false
"""
)

# KEYS: lease, done, holding, queue, votes, task, requested. ARGV: reviewer, now, item.
# Returns the request as received (false: not the reviewer's to answer).
_FINISH = (
    _LEASES
    + """
local reviewer, now = ARGV[1], tonumber(ARGV[2])
local request = redis.call('HGET', KEYS[6], 'request')
if not request then return false end
local _, mine = leases(KEYS[1], reviewer, now)
if not mine then return false end
redis.call('HDEL', KEYS[1], reviewer)
redis.call('DEL', KEYS[3])
if redis.call('SADD', KEYS[2], reviewer) == 0 then return false end
local wanted = tonumber(redis.call('HGET', KEYS[6], 'wanted') or '1')
if opinions(KEYS[2], KEYS[5]) >= wanted then
  redis.call('ZREM', KEYS[4], ARGV[3])
  redis.call('ZREM', KEYS[7], ARGV[3])
end
return request
"""
)

# KEYS: lease, done, holding, queue, task, requested. ARGV: reviewer, lease end, item, lease ms.
_REOPEN = """
if redis.call('SREM', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
local priority = redis.call('HGET', KEYS[5], 'priority')
if priority then
  redis.call('ZADD', KEYS[4], priority, ARGV[3])
  redis.call('ZADD', KEYS[6], 'NX', redis.call('HGET', KEYS[5], 'requested_at'), ARGV[3])
end
return 1
"""


@dataclass(frozen=True)
class ClaimedTask:
    request: ReviewRequest
    lease_until: float
    fresh: bool


class TaskQueue:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        lease_s: float,
        opinions: int = 1,
        max_age_s: float = 24 * 3600.0,
        scan: int = 500,
    ) -> None:
        """``scan``: how many of the highest-priority items one claim looks at."""
        self.redis = redis
        self.keys = ConsoleKeys(prefix)
        self.labels = LabelKeys(prefix)
        self.lease_s = lease_s
        self.opinions = opinions
        self.max_age_s = max_age_s
        self.scan = scan
        self._claim: Any = redis.register_script(_CLAIM)
        self._finish: Any = redis.register_script(_FINISH)
        self._reopen: Any = redis.register_script(_REOPEN)

    # --- feeding --------------------------------------------------------------------------
    async def add(self, request: ReviewRequest) -> None:
        """Queue a request (idempotent: a duplicate delivery changes nothing; a later request
        for the same item, a second opinion, raises the opinions wanted)."""
        v, item = request.policy_version, request.item_id
        task = self.keys.task(v, item)
        wanted = max(self.opinions, request.opinions, len(request.already_labeled_by) + 1)
        current = await self.redis.hget(task, "wanted")
        if current is not None:
            wanted = max(wanted, int(current))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                task,
                mapping={
                    "request": request.model_dump_json(),
                    "wanted": wanted,
                    "priority": request.priority,
                    "requested_at": request.requested_at,
                },
            )
            pipe.expire(task, int(self.max_age_s) + 3600)  # expire() closes it before
            if request.already_labeled_by:
                pipe.sadd(self.keys.done(v, item), *request.already_labeled_by)
            pipe.zadd(self.keys.queue(v), {item: request.priority})
            pipe.zadd(self.keys.requested(v), {item: request.requested_at}, nx=True)
            await pipe.execute()

    async def request(self, policy: str, item_id: str) -> ReviewRequest | None:
        raw = await self.redis.hget(self.keys.task(policy, item_id), "request")
        return None if raw is None else ReviewRequest.model_validate_json(raw)

    # --- reviewing ------------------------------------------------------------------------
    async def claim(self, policy: str, reviewer: str, *, now: float) -> ClaimedTask | None:
        """The reviewer's task: the one they hold, else the highest-priority open opinion they
        may take, leased to them; None when there is none."""
        until = now + self.lease_s
        got = await self._claim(
            keys=[
                self.keys.queue(policy),
                self.keys.holding(policy, reviewer),
                self.keys.skipped(policy, reviewer),
                self.keys.requested(policy),
            ],
            args=[
                reviewer,
                repr(now),
                repr(until),
                self.scan,
                self.keys.lease(policy, ""),
                self.keys.done(policy, ""),
                self.keys.task(policy, ""),
                self.labels.votes(policy, ""),
                int(self.lease_s * 1000),
            ],
        )
        if not got or not got[2]:
            return None
        request = ReviewRequest.model_validate_json(got[2])
        return ClaimedTask(request, until, text(got[1]) == "new")

    async def finish(
        self, policy: str, item_id: str, reviewer: str, *, now: float
    ) -> ReviewRequest | None:
        """The reviewer answered: the request when they held a live lease on it (then the
        opinion is theirs and the lease is gone), None otherwise (expired, never claimed,
        answered, closed)."""
        raw = await self._finish(
            keys=[
                self.keys.lease(policy, item_id),
                self.keys.done(policy, item_id),
                self.keys.holding(policy, reviewer),
                self.keys.queue(policy),
                self.labels.votes(policy, item_id),
                self.keys.task(policy, item_id),
                self.keys.requested(policy),
            ],
            args=[reviewer, repr(now), item_id],
        )
        return None if not raw else ReviewRequest.model_validate_json(raw)

    async def reopen(self, policy: str, item_id: str, reviewer: str, *, now: float) -> bool:
        """Undo of an answer not yet sent: the opinion is the reviewer's task again."""
        done = await self._reopen(
            keys=[
                self.keys.lease(policy, item_id),
                self.keys.done(policy, item_id),
                self.keys.holding(policy, reviewer),
                self.keys.queue(policy),
                self.keys.task(policy, item_id),
                self.keys.requested(policy),
            ],
            args=[reviewer, repr(now + self.lease_s), item_id, int(self.lease_s * 1000)],
        )
        return bool(done)

    async def release(
        self, policy: str, item_id: str, reviewer: str, *, skip: bool = False
    ) -> bool:
        """Give the lease back (``skip``: and do not offer the item to this reviewer again for
        an hour). False when the reviewer held no lease on it."""
        skipped = self.keys.skipped(policy, reviewer)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.lease(policy, item_id), reviewer)
            pipe.delete(self.keys.holding(policy, reviewer))
            if skip:
                pipe.sadd(skipped, item_id)
                pipe.expire(skipped, SKIP_TTL_S)
            released, *_ = await pipe.execute()
        return bool(released)

    # --- expiry and figures ---------------------------------------------------------------
    async def expire(self, policy: str, *, now: float) -> int:
        """Close the requests older than ``max_age_s``, in the console's queue and in the label
        store's open set; return how many were closed (each counted once, whichever replica
        closed it)."""
        cutoff = now - self.max_age_s
        mine = await self.redis.zrangebyscore(self.keys.requested(policy), "-inf", cutoff)
        theirs = await self.redis.zrangebyscore(self.labels.open_requests(policy), "-inf", cutoff)
        items = {text(i) for i in mine} | {text(i) for i in theirs}
        if not items:
            return 0
        async with self.redis.pipeline(transaction=True) as pipe:
            for item in sorted(items):
                pipe.zrem(self.keys.requested(policy), item)
                pipe.zrem(self.labels.open_requests(policy), item)
                pipe.zrem(self.keys.queue(policy), item)
                pipe.delete(self.keys.task(policy, item), self.keys.lease(policy, item))
            results = await pipe.execute()
        closed = sum(1 for i in range(0, len(results), 4) if results[i] or results[i + 1])
        if closed:
            await self.redis.incrby(self.keys.expired(policy), closed)
        return closed

    async def depth(self, policy: str) -> dict[str, int]:
        """Open items in the queue by reason."""
        items = [text(i) for i in await self.redis.zrange(self.keys.queue(policy), 0, -1)]
        counts: dict[str, int] = {}
        for item in items:
            request = await self.request(policy, item)
            if request is not None:
                counts[request.reason.value] = counts.get(request.reason.value, 0) + 1
        return counts

    async def oldest(self, policy: str) -> float | None:
        """When the oldest open request was made (None: none is open)."""
        first = await self.redis.zrange(self.keys.requested(policy), 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    async def expired_total(self, policy: str) -> int:
        raw = await self.redis.get(self.keys.expired(policy))
        return int(raw) if raw else 0
