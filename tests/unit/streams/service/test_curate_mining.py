"""Unit tests for the curator's background mining (``Curator(miner=...)``): the batch that makes a
mining due returns without waiting for the clustering, the pairs it finds join a later batch,
and they are the very pairs inline mining finds on the same window; a mining that fails is
logged and due again, never the batch's end."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pytest

from adapters.review.routing import RoutingPolicy
from adapters.review.window import CurationWindow
from models.scorer import ScoreBatch
from streams.service.curate import Curator
from streams.wire.messages import IncomingItem, ReviewReason, ReviewRequest

POLICY = RoutingPolicy("v1", 0.5, 0.45, 0.46)  # a narrow band: what goes out is mostly pairs
DIM = 8


@dataclass
class Ledger:
    requested: set[str] = field(default_factory=set)

    async def already_requested(self, policy_version: str, item_ids: Sequence[str]) -> list[bool]:
        return [i in self.requested for i in item_ids]

    async def mark_requested(self, policy_version: str, item_ids: Sequence[str]) -> None:
        self.requested.update(item_ids)


def _blocks(n_blocks: int, size: int) -> list[tuple[list[IncomingItem], ScoreBatch]]:
    """Two overlapping blobs (as in the curation tests), cut into blocks of ``size``."""
    rng = np.random.default_rng(1)
    benign, violating = np.zeros(DIM), np.zeros(DIM)
    benign[0], violating[0], violating[1] = 1.0, np.cos(1.0), np.sin(1.0)
    n = n_blocks * size
    centres = np.where((np.arange(n) % 3 == 0)[:, None], violating, benign)
    x = centres + 0.2 * rng.normal(size=(n, DIM))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    p = 1.0 / (1.0 + np.exp(-(8.0 * (x @ (violating - benign)) + rng.normal(size=n))))
    out = []
    for b in range(n_blocks):
        rows = slice(b * size, (b + 1) * size)
        items = [IncomingItem(item_id=f"ad-{i}", text=f"ad {i}") for i in range(n)[rows]]
        probs = np.stack([1 - p[rows], p[rows]], axis=1).astype(np.float32)
        out.append((items, ScoreBatch(probs, x[rows], ("benign", "violating"), "a1")))
    return out


def _curator(miner: Executor | None) -> Curator:
    return Curator(
        ledger=Ledger(),
        policy=POLICY,
        window=CurationWindow(200, DIM),
        mine_every=40,
        max_pairs=4,
        audit_rate=0.0,
        miner=miner,
    )


def _pairs(requests: list[ReviewRequest]) -> set[str]:
    return {r.item_id for r in requests if r.reason is ReviewReason.BOUNDARY}


class GatedExecutor(Executor):
    """Runs each job on a thread that waits for ``release`` first: a clustering that takes
    as long as the test wants."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=1)

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        def gated():  # type: ignore[no-untyped-def]
            assert self.release.wait(10)
            return fn(*args, **kwargs)

        return self.pool.submit(gated)


def test_no_batch_waits_for_mining_and_the_pairs_come_with_a_later_one() -> None:
    blocks = _blocks(6, 20)

    async def run(curator: Curator, gate: GatedExecutor | None) -> list[set[str]]:
        out = []
        for k, (items, batch) in enumerate(blocks):
            requests = await curator.select(items, batch, 0.0, POLICY)
            await curator.commit(requests)
            out.append(_pairs(requests))
            if gate is not None and k == 2:
                gate.release.set()  # the mining due at block 1 finishes during block 3
                await asyncio.sleep(0.2)
        return out

    inline = asyncio.run(run(_curator(None), None))
    gate = GatedExecutor()
    background = asyncio.run(run(_curator(gate), gate))
    gate.pool.shutdown()
    assert inline[1], "inline mining found no pairs: the blobs do not overlap"
    # inline: the pairs go out with the batch that made the mining due (block 1, 40 items)
    # background: that batch and the next went out without waiting; the pairs came with block 3
    assert background[1] == background[2] == set()
    assert background[3] == inline[1]


def test_a_failed_mining_is_logged_and_due_again(caplog: pytest.LogCaptureFixture) -> None:
    class Failing(Executor):
        calls = 0

        def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
            Failing.calls += 1
            done: Future[object] = Future()
            done.set_exception(RuntimeError("clustering blew up"))
            return done

    blocks = _blocks(4, 20)

    async def run() -> None:
        curator = _curator(Failing())
        for items, batch in blocks:
            await curator.commit(await curator.select(items, batch, 0.0, POLICY))
            await asyncio.sleep(0)

    asyncio.run(run())
    assert Failing.calls >= 2  # due at block 1, failed, due again at once
    assert "mining the window failed" in caplog.text


def test_a_pair_whose_partner_was_already_requested_is_completed() -> None:
    """A boundary pair one of whose members went out before (as uncertain, say) is completed:
    the partner's labels are coming anyway, so the other member goes out naming it; it is not
    dropped for want of a pair (the live stream lost most of its pairs that way)."""
    blocks = _blocks(2, 20)

    async def run(curator: Curator) -> list[ReviewRequest]:
        out: list[ReviewRequest] = []
        for items, batch in blocks:
            requests = await curator.select(items, batch, 0.0, POLICY)
            await curator.commit(requests)
            out += requests
        return out

    found = [r for r in asyncio.run(run(_curator(None))) if r.reason is ReviewReason.BOUNDARY]
    assert found, "inline mining found no pairs: the blobs do not overlap"
    sent_before = {r.item_id for r in found[::2]}  # one member of each pair
    curator = _curator(None)
    curator.ledger.requested.update(sent_before)  # type: ignore[attr-defined]
    again = [r for r in asyncio.run(run(curator)) if r.reason is ReviewReason.BOUNDARY]
    assert {(r.item_id, r.pair_item_id) for r in again} == {
        (r.item_id, r.pair_item_id) for r in found[1::2]
    }
