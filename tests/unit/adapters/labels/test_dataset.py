"""Unit tests for adapters.dataset: JSONL reading and writing, hashing, seeded sampling."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from adapters.labels.dataset import (
    DatasetError,
    LabeledItem,
    dataset_hash,
    parse_label,
    read_jsonl,
    sample,
    split_holdout,
    write_jsonl,
)
from models.errors import BorderlineError


def _write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _pool(n: int) -> list[LabeledItem]:
    return [LabeledItem(f"item-{i:03d}", f"text number {i}", int(i % 3 == 0)) for i in range(n)]


# --- labels --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1, 1),
        (0, 0),
        (True, 1),
        (False, 0),
        (1.0, 1),
        ("1", 1),
        ("0", 0),
        ("true", 1),
        ("False", 0),
        ("spam", 1),
        ("HAM", 0),
        ("Violating", 1),
        ("benign", 0),
        ("positive", 1),
        (" Negative ", 0),
    ],
)
def test_parse_label_accepts_common_spellings(raw: object, expected: int) -> None:
    assert parse_label(raw) == expected


@pytest.mark.parametrize("raw", [2, -1, 0.5, "yes", "", None, [1]])
def test_parse_label_rejects_anything_else(raw: object) -> None:
    with pytest.raises(ValueError, match="unknown label"):
        parse_label(raw)


def test_label_variants_read_from_jsonl(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "mixed.jsonl",
        json.dumps({"id": "a", "text": "x", "label": "Spam"}),
        json.dumps({"id": "b", "text": "x", "label": False}),
        json.dumps({"id": "c", "text": "x", "label": "violating"}),
        json.dumps({"id": "d", "text": "x", "label": "0"}),
    )
    assert [it.label for it in read_jsonl(path)] == [1, 0, 1, 0]


# --- reading -------------------------------------------------------------------------------------


def test_read_jsonl_ids_groups_and_blank_lines(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "data.jsonl",
        json.dumps({"id": "x1", "text": "buy now", "label": 1, "group": "spam-1"}),
        "",
        json.dumps({"item_id": 7, "text": "hello", "label": 0, "metadata": {"group": "ham"}}),
        "   ",
        json.dumps({"text": "no id here", "label": "ham"}),
    )
    items = read_jsonl(path)
    assert items == [
        LabeledItem("x1", "buy now", 1, "spam-1"),
        LabeledItem("7", "hello", 0, "ham"),
        LabeledItem("line-5", "no id here", 0, None),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "x", "label": 1', "bad JSON"),
        ('["x", 1]', "expected a JSON object"),
        ('{"label": 1}', "missing field 'text'"),
        ('{"text": "  ", "label": 1}', "empty 'text'"),
        ('{"text": 5, "label": 1}', "not a string"),
        ('{"text": "x"}', "missing field 'label'"),
        ('{"text": "x", "label": "maybe"}', "unknown label 'maybe'"),
        ('{"id": "", "text": "x", "label": 1}', "bad id"),
        ('{"text": "x", "label": 1, "group": 3}', "bad group"),
    ],
)
def test_malformed_line_names_file_line_and_problem(
    tmp_path: Path, line: str, message: str
) -> None:
    good = json.dumps({"id": "ok", "text": "fine", "label": 0})
    path = _write(tmp_path / "bad.jsonl", good, "", line, good.replace("ok", "ok2"))
    with pytest.raises(DatasetError, match=message) as info:
        read_jsonl(path)
    assert f"{path}:3:" in str(info.value)


def test_duplicate_id_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    rec = json.dumps({"id": "same", "text": "x", "label": 1})
    path = _write(tmp_path / "dup.jsonl", rec, rec)
    with pytest.raises(
        DatasetError, match=r"dup.jsonl:2: duplicate id 'same' \(first seen on line 1"
    ):
        read_jsonl(path)


def test_empty_or_blank_file_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    blank = _write(tmp_path / "blank.jsonl", "", "  ", "")
    for path in (empty, blank):
        with pytest.raises(DatasetError, match="no items"):
            read_jsonl(path)


def test_missing_file_and_non_utf8_are_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read"):
        read_jsonl(tmp_path / "nope.jsonl")
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "caf\xe9", "label": 0}\n')
    with pytest.raises(DatasetError, match=r"latin1.jsonl:1: not UTF-8"):
        read_jsonl(path)


def test_dataset_error_is_a_borderline_error() -> None:
    assert issubclass(DatasetError, BorderlineError)


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    items = [
        LabeledItem("a", "Ünïcödé text\nwith a newline", 1, "spam-2"),
        LabeledItem("b", 'quotes " and \\ backslashes', 0),
    ]
    path = tmp_path / "sub" / "out.jsonl"
    write_jsonl(path, items)
    assert read_jsonl(path) == items
    assert not list(path.parent.glob(".*.tmp"))
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert first == {
        "id": "a",
        "text": "Ünïcödé text\nwith a newline",
        "label": 1,
        "group": "spam-2",
    }


# --- hashing -------------------------------------------------------------------------------------


def test_hash_is_independent_of_order() -> None:
    items = _pool(20)
    shuffled = items[:]
    random.Random(4).shuffle(shuffled)
    assert dataset_hash(items) == dataset_hash(shuffled)
    assert len(dataset_hash(items)) == 64


def test_hash_changes_with_a_label_flip_a_text_edit_or_an_id() -> None:
    items = _pool(10)
    base = dataset_hash(items)
    flipped = [*items[:3], LabeledItem(items[3].item_id, items[3].text, 1 - items[3].label)]
    flipped += items[4:]
    edited = [*items[:-1], LabeledItem(items[-1].item_id, items[-1].text + ".", items[-1].label)]
    renamed = [LabeledItem("other", items[0].text, items[0].label), *items[1:]]
    assert len({base, dataset_hash(flipped), dataset_hash(edited), dataset_hash(renamed)}) == 4
    assert dataset_hash(items[:-1]) != base


def test_hash_ignores_group_metadata() -> None:
    items = _pool(5)
    regrouped = [LabeledItem(it.item_id, it.text, it.label, "g") for it in items]
    assert dataset_hash(items) == dataset_hash(regrouped)


# --- sampling ------------------------------------------------------------------------------------


def test_sample_is_deterministic_and_independent_of_input_order() -> None:
    items = _pool(50)
    a = sample(items, 10, seed=3)
    assert a == sample(items, 10, seed=3)
    assert a == sample(list(reversed(items)), 10, seed=3)
    assert a != sample(items, 10, seed=4)
    assert len({it.item_id for it in a}) == 10


def test_sample_does_not_touch_global_random_state() -> None:
    import numpy as np

    random.seed(1)
    np.random.seed(1)
    expected = (random.random(), np.random.random())
    random.seed(1)
    np.random.seed(1)
    sample(_pool(30), 5, seed=9)
    assert (random.random(), np.random.random()) == expected


def test_sample_respects_exclude() -> None:
    items = _pool(12)
    excluded = {it.item_id for it in items[:8]}
    got = sample(items, 4, seed=0, exclude=excluded)
    assert {it.item_id for it in got} == {it.item_id for it in items[8:]}


def test_sample_too_many_or_negative_is_an_error() -> None:
    items = _pool(5)
    with pytest.raises(DatasetError, match="only 3 available"):
        sample(items, 4, seed=0, exclude={"item-000", "item-001"})
    with pytest.raises(DatasetError, match="n must be >= 0"):
        sample(items, -1, seed=0)
    assert sample(items, 0, seed=0) == []


def test_sample_refuses_duplicate_ids() -> None:
    items = [LabeledItem("a", "x", 0), LabeledItem("a", "y", 1)]
    with pytest.raises(DatasetError, match="duplicate item id 'a'"):
        sample(items, 1, seed=0)


def test_split_holdout_is_deterministic_disjoint_and_complete() -> None:
    items = _pool(40)
    rest, holdout = split_holdout(items, 15, seed=11)
    assert (rest, holdout) == split_holdout(items, 15, seed=11)
    assert len(holdout) == 15 and len(rest) == 25
    rest_ids, held_ids = {it.item_id for it in rest}, {it.item_id for it in holdout}
    assert not rest_ids & held_ids
    assert rest_ids | held_ids == {it.item_id for it in items}
    # `rest` keeps the input order.
    assert rest == [it for it in items if it.item_id in rest_ids]
    assert split_holdout(items, 15, seed=12)[1] != holdout
