"""Labelled data for the adaptation loop: read and write JSONL, fingerprint a data set, and draw
seeded samples and hold-out splits. Every adapter records `dataset_hash` of what it was trained on;
sampling takes its seed as an argument and never touches global random state."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import BorderlineError

__all__ = [
    "DatasetError",
    "LabeledItem",
    "dataset_hash",
    "parse_label",
    "read_jsonl",
    "sample",
    "split_holdout",
    "write_jsonl",
]

# Label spellings accepted from other people's JSONL, compared after strip + lower-case.
_LABEL_WORDS: Mapping[str, int] = {
    "1": 1,
    "true": 1,
    "spam": 1,
    "violating": 1,
    "positive": 1,
    "0": 0,
    "false": 0,
    "ham": 0,
    "benign": 0,
    "negative": 0,
}

# Bumped if the canonical form behind `dataset_hash` ever changes, so old and new hashes differ.
_HASH_VERSION = b"borderline-dataset-v1\n"


class DatasetError(BorderlineError):
    """A labelled data set that cannot be read or used: the message names the file, the line and
    the offending value."""


@dataclass(frozen=True)
class LabeledItem:
    """One labelled text. `label` is 1 for violating, 0 for benign; `group` is the corpus group the
    item came from (metadata only: it takes no part in `dataset_hash`)."""

    item_id: str
    text: str
    label: int
    group: str | None = None


def parse_label(value: object) -> int:
    """Map a label as other tools write it to 1 (violating) or 0 (benign).

    Accepts 0/1 (int, integral float or string), booleans, and the words spam/ham,
    violating/benign, positive/negative, true/false in any case.

    >>> [parse_label(v) for v in (1, False, "Spam", " benign ", "0")]
    [1, 0, 1, 0, 0]
    """
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, float) and value in (0.0, 1.0):
        return int(value)
    if isinstance(value, str):
        label = _LABEL_WORDS.get(value.strip().lower())
        if label is not None:
            return label
    raise ValueError(f"unknown label {value!r} (expected 0/1, true/false, spam/ham, ...)")


def _item_from_record(record: Any, line_no: int) -> LabeledItem:
    """Build one item from a decoded JSON line; raise ValueError saying what is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if "text" not in record:
        raise ValueError("missing field 'text'")
    text = record["text"]
    if not isinstance(text, str):
        raise ValueError(f"field 'text' is {type(text).__name__}, not a string")
    if not text.strip():
        raise ValueError("empty 'text'")
    if "label" not in record:
        raise ValueError("missing field 'label'")
    try:
        label = parse_label(record["label"])
    except ValueError as exc:
        raise ValueError(str(exc)) from None

    raw_id = record.get("id", record.get("item_id"))
    if raw_id is None:
        item_id = f"line-{line_no}"
    elif isinstance(raw_id, str) and raw_id.strip():
        item_id = raw_id
    elif isinstance(raw_id, int) and not isinstance(raw_id, bool):
        item_id = str(raw_id)
    else:
        raise ValueError(f"bad id {raw_id!r} (expected a non-empty string or an integer)")

    group = record.get("group")
    if group is None and isinstance(record.get("metadata"), dict):
        group = record["metadata"].get("group")
    if group is not None and not isinstance(group, str):
        raise ValueError(f"bad group {group!r} (expected a string)")
    return LabeledItem(item_id=item_id, text=text, label=label, group=group)


def read_jsonl(path: Path) -> list[LabeledItem]:
    """Read labelled items from a JSONL file: one object per line with `text` and `label`.

    `id` (or `item_id`) is optional and defaults to `line-<n>` (1-based); `group` is read from
    `group` or `metadata.group`. Blank lines are skipped. Any malformed line, a duplicated id or a
    file without items raises DatasetError naming the file and the line.
    """
    path = Path(path)
    try:
        raw_lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from exc

    items: list[LabeledItem] = []
    first_line_of: dict[str, int] = {}
    for line_no, raw in enumerate(raw_lines, start=1):
        where = f"{path}:{line_no}"
        try:
            line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: bad JSON: {exc.msg} (column {exc.colno})") from None
        try:
            item = _item_from_record(record, line_no)
        except ValueError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        if item.item_id in first_line_of:
            raise DatasetError(
                f"{where}: duplicate id {item.item_id!r} (first seen on line "
                f"{first_line_of[item.item_id]})"
            )
        first_line_of[item.item_id] = line_no
        items.append(item)
    if not items:
        raise DatasetError(f"{path}: no items (the file is empty or has only blank lines)")
    return items


def write_jsonl(path: Path, items: Iterable[LabeledItem]) -> None:
    """Write items as JSONL (`id`, `text`, `label`, and `group` when set), in the given order.

    The file is written next to its destination and renamed into place, so a reader never sees a
    half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="\n") as fh:
            for item in items:
                record: dict[str, object] = {
                    "id": item.item_id,
                    "text": item.text,
                    "label": item.label,
                }
                if item.group is not None:
                    record["group"] = item.group
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def dataset_hash(items: Sequence[LabeledItem]) -> str:
    """SHA-256 (hex) of a data set's content: ids, labels and texts, independent of order.

    The canonical form is one JSON array `[id, label, text]` per item, sorted by id; `group` is
    metadata and takes no part. Flipping one label changes the hash.

    >>> a, b = LabeledItem("a", "hi", 0), LabeledItem("b", "buy now", 1)
    >>> dataset_hash([a, b]) == dataset_hash([b, a])
    True
    """
    digest = hashlib.sha256(_HASH_VERSION)
    for item in sorted(items, key=lambda it: (it.item_id, it.label, it.text)):
        line = json.dumps([item.item_id, item.label, item.text], ensure_ascii=False)
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()


def _unique_by_id(items: Sequence[LabeledItem]) -> list[LabeledItem]:
    """Items sorted by id, so that a draw depends on the set and the seed, not on input order."""
    ordered = sorted(items, key=lambda it: it.item_id)
    for prev, cur in itertools.pairwise(ordered):
        if prev.item_id == cur.item_id:
            raise DatasetError(f"duplicate item id {cur.item_id!r}: ids must be unique to sample")
    return ordered


def sample(
    items: Sequence[LabeledItem],
    n: int,
    seed: int,
    exclude: set[str] | frozenset[str] = frozenset(),
) -> list[LabeledItem]:
    """Draw `n` distinct items without replacement, skipping ids in `exclude`.

    Deterministic: the same items (in any order), `n` and `seed` give the same list, in the order
    drawn. Uses its own `numpy.random.Generator`; global random state is never touched.

    >>> pool = [LabeledItem(str(i), f"text {i}", i % 2) for i in range(10)]
    >>> sample(pool, 3, seed=7) == sample(list(reversed(pool)), 3, seed=7)
    True
    """
    if n < 0:
        raise DatasetError(f"cannot sample n={n} items: n must be >= 0")
    candidates = [it for it in _unique_by_id(items) if it.item_id not in exclude]
    if n > len(candidates):
        raise DatasetError(
            f"cannot sample n={n} items: only {len(candidates)} available "
            f"({len(items)} given, {len(items) - len(candidates)} excluded)"
        )
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(candidates), size=n, replace=False)
    return [candidates[int(i)] for i in picks]


def split_holdout(
    items: Sequence[LabeledItem], n_holdout: int, seed: int
) -> tuple[list[LabeledItem], list[LabeledItem]]:
    """Split into `(rest, holdout)`: `holdout` is `sample(items, n_holdout, seed)`, `rest` is every
    other item in input order. The two are disjoint and together are all of `items`.

    >>> pool = [LabeledItem(str(i), f"text {i}", i % 2) for i in range(10)]
    >>> rest, holdout = split_holdout(pool, 4, seed=1)
    >>> len(rest), len(holdout), {i.item_id for i in rest} & {i.item_id for i in holdout}
    (6, 4, set())
    """
    holdout = sample(items, n_holdout, seed)
    held = {it.item_id for it in holdout}
    rest = [it for it in items if it.item_id not in held]
    return rest, holdout
