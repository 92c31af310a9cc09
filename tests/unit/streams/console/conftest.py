"""What the console's unit tests share: a cheap Argon2id hasher (the production parameters cost
~50 ms a hash) and a reviewer registry fake of the label store's interface."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher


class FakeRegistry:
    """The label store's reviewer registry, in memory."""

    def __init__(self) -> None:
        self.reviewers: set[str] = set()

    async def register_reviewers(self, reviewer_ids: list[str]) -> int:
        new = set(reviewer_ids) - self.reviewers
        self.reviewers |= new
        return len(new)


@pytest.fixture
def hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
