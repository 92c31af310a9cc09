"""What starts a training round, and whether one can start now: a policy version that has no
adapter yet, enough new training labels since the last round, a drift flag a worker or the
collector raised, or an operator's forced round; then enough labels to train on and to judge
the candidate with.

Pure decisions, no I/O: the trainer reads the figures from its stores and passes them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["MIN_TRAIN_LABELS", "Readiness", "readiness", "triggers"]

MIN_TRAIN_LABELS = 20
"""Fewer consensus training labels than this are not worth a round, whatever triggered it."""


def triggers(
    *,
    policy_published: bool,
    adapter_active: bool,
    train_labels: int,
    trained_on: int,
    min_new_labels: int,
    drift_flags: Iterable[str],
    forced: bool,
) -> list[str]:
    """Why a round would start, in a fixed order: ``policy_change`` (a published policy version
    has no active adapter, and no round has been tried on these training labels: a refused
    candidate is not trained again until a label more comes), ``new_labels`` (at least
    ``min_new_labels`` training labels more than the last round used), ``drift:<names>`` (the
    raised flags, sorted, comma-separated), ``forced``. Empty: nothing triggered.

    >>> triggers(policy_published=True, adapter_active=False, train_labels=130, trained_on=20,
    ...          min_new_labels=100, drift_flags={"prediction", "input"}, forced=False)
    ['policy_change', 'new_labels', 'drift:input,prediction']
    >>> triggers(policy_published=False, adapter_active=False, train_labels=50, trained_on=0,
    ...          min_new_labels=100, drift_flags=(), forced=False)
    []
    """
    fired = []
    if policy_published and not adapter_active and (trained_on == 0 or train_labels > trained_on):
        fired.append("policy_change")
    if train_labels - trained_on >= min_new_labels:
        fired.append("new_labels")
    flags = sorted(set(drift_flags))
    if flags:
        fired.append("drift:" + ",".join(flags))
    if forced:
        fired.append("forced")
    return fired


@dataclass(frozen=True)
class Readiness:
    """Whether a round starts now; when it does not, ``reason`` says which figure is short
    and by how many labels."""

    train: bool
    reason: str


def _short(what: str, have: int, need: int) -> str:
    return f"waiting for {need - have} more {what} labels ({have} of {need})"


def readiness(
    fired: Sequence[str],
    *,
    train_labels: int,
    eval_labels: int,
    min_eval_items: int,
    min_train_labels: int = MIN_TRAIN_LABELS,
    eval_sides: tuple[int, int] | None = None,
    min_per_class: int = 1,
) -> Readiness:
    """A round starts when something triggered it, there are at least ``min_train_labels``
    training labels, at least ``min_eval_items`` evaluation labels (the audit draws) and, when
    ``eval_sides`` (violating, benign) is given, ``min_per_class`` of each: a candidate the gate
    cannot judge is not worth the training time.

    >>> readiness(["new_labels"], train_labels=80, eval_labels=38, min_eval_items=50).reason
    'waiting for 12 more audit evaluation labels (38 of 50)'
    >>> readiness(["forced"], train_labels=80, eval_labels=60, min_eval_items=50,
    ...           eval_sides=(2, 58), min_per_class=5).reason
    'waiting for 3 more violating audit evaluation labels (2 of 5)'
    >>> readiness(["forced"], train_labels=80, eval_labels=60, min_eval_items=50)
    Readiness(train=True, reason='triggered: forced')
    """
    if not fired:
        return Readiness(False, "nothing triggered")
    if train_labels < min_train_labels:
        return Readiness(False, _short("training", train_labels, min_train_labels))
    if eval_labels < min_eval_items:
        return Readiness(False, _short("audit evaluation", eval_labels, min_eval_items))
    for side, have in zip(("violating", "benign"), eval_sides or (), strict=False):
        if have < min_per_class:
            return Readiness(False, _short(f"{side} audit evaluation", have, min_per_class))
    return Readiness(True, "triggered: " + ",".join(fired))
