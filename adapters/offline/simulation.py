"""SIMULATION ONLY: a simulated expert panel for the demo, the tests and the benchmarks. Each
simulated reviewer answers from the corpus's ground truth, wrong with a configured probability
and after a configured delay. Nothing in a production path imports this module.

>>> r = SimulatedReviewer("alice", error_rate=0.0, delay_s=0.5)
>>> r.answer("benign", rng=np.random.default_rng(0), labels=("benign", "violating"))
'benign'
>>> parse_panel("alice:0.03,bob:0.05:2.0")[1]
SimulatedReviewer(reviewer_id='bob', error_rate=0.05, delay_s=2.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.errors import BorderlineError

__all__ = [
    "DEFAULT_PANEL",
    "PROMOTIONAL_GROUP",
    "PanelSpecError",
    "SimulatedReviewer",
    "choose_reviewers",
    "parse_panel",
    "policy_truth",
]

# three careful experts and one who answers at random (error rate 0.5)
DEFAULT_PANEL = "alice:0.03,bob:0.05,carol:0.05,randy:0.5"


# the corpus group that policy v2 (deploy/policies/v2.yaml) makes violating: promotional mail
PROMOTIONAL_GROUP = "hard-ham"
_FORBID_PROMOTION = frozenset({"v2"})


def policy_truth(item_id: str, policy_version: str, corpus_label: str) -> str:
    """The simulated experts' reading of the shipped policies: under v2, unsolicited promotional
    mail (the corpus's hard-ham group) violates; otherwise the corpus label stands. A run tag
    may prefix the corpus id (``tag:hard-ham-1/00001``).

    >>> [policy_truth("hard-ham-1/00007", v, "benign") for v in ("v1", "v2")]
    ['benign', 'violating']
    """
    corpus_id = item_id.rsplit(":", 1)[-1]
    if policy_version in _FORBID_PROMOTION and corpus_id.startswith(PROMOTIONAL_GROUP):
        return "violating"
    return corpus_label


class PanelSpecError(BorderlineError):
    """A simulated-panel description that cannot be parsed."""


@dataclass(frozen=True)
class SimulatedReviewer:
    reviewer_id: str
    error_rate: float
    delay_s: float = 0.5

    def answer(self, truth: str, *, rng: np.random.Generator, labels: Sequence[str]) -> str:
        """The true label, or with probability ``error_rate`` one of the other labels."""
        if rng.random() >= self.error_rate:
            return truth
        others = [label for label in labels if label != truth]
        return str(others[int(rng.integers(len(others)))]) if others else truth


def parse_panel(spec: str, default_delay_s: float = 0.5) -> list[SimulatedReviewer]:
    """``id:error_rate[:delay_s],...`` -> reviewers."""
    panel = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        fields = part.split(":")
        if len(fields) not in (2, 3) or not fields[0]:
            raise PanelSpecError(f"reviewer {part!r}: expected id:error_rate[:delay_s]")
        try:
            error = float(fields[1])
            delay = float(fields[2]) if len(fields) == 3 else default_delay_s
        except ValueError:
            raise PanelSpecError(
                f"reviewer {part!r}: error rate and delay must be numbers"
            ) from None
        if not 0.0 <= error <= 1.0 or delay < 0:
            raise PanelSpecError(f"reviewer {part!r}: error rate in [0, 1], delay >= 0")
        panel.append(SimulatedReviewer(fields[0], error, delay))
    if not panel:
        raise PanelSpecError("the panel has no reviewers")
    return panel


def choose_reviewers(
    panel: Sequence[SimulatedReviewer],
    *,
    count: int,
    rng: np.random.Generator,
    exclude: Sequence[str] = (),
) -> list[SimulatedReviewer]:
    """``count`` distinct reviewers not in ``exclude`` (fewer if the panel is too small)."""
    free = [r for r in panel if r.reviewer_id not in exclude]
    if not free:
        return []
    picks = rng.choice(len(free), size=min(count, len(free)), replace=False)
    return [free[int(i)] for i in picks]
