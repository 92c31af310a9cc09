"""Labels given in the console are signed for the signed-in reviewer with that reviewer's key
(`adapters.labels.admission`: HMAC-SHA256 over the label's canonical bytes), as any client must,
so the collector admits them. The keys come from the reviewer key ring (a key is issued to a
console user who has none yet)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from streams.console.outbox import LabelSigner
from streams.service.admission import signed
from streams.wire.messages import ReviewLabel

__all__ = ["KeyRing", "keyed_signer"]


class KeyRing(Protocol):
    """`adapters.labels.keyring.ReviewerKeys`: each reviewer's key, issued when missing."""

    async def ensure(self, reviewer_ids: Iterable[str]) -> dict[str, bytes]: ...


def keyed_signer(keys: KeyRing) -> LabelSigner:
    async def sign(label: ReviewLabel) -> ReviewLabel:
        key = (await keys.ensure([label.reviewer_id]))[label.reviewer_id]
        return signed(label, key)

    return sign
