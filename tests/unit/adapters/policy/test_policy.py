"""Policy documents: valid ones load, every kind of invalid one is refused with one line that
names the file and the field, and a policy becomes a valid `PolicyUpdate` message. The shipped
v1 and v2 documents load and say what the v2 transition needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.policy.message import to_message
from adapters.policy.schema import BENIGN, Policy, PolicyError, load_policy, parse_policy
from streams.wire.messages import PolicyUpdate, decode, encode
from streams.wire.settings import PolicySettings, ReviewSettings

REPO = Path(__file__).resolve().parents[4]
POLICIES = REPO / "deploy" / "policies"

VALID = """\
version: v7
description: Spam is violating.
categories:
  - name: violating
    definition: Unsolicited bulk mail.
    block_threshold: 0.5
review_band:
  low: 0.3
  high: 0.7
"""


def _refused(text: str) -> str:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source="policy.yaml")
    message = str(caught.value)
    assert "\n" not in message, message
    assert message.startswith("policy.yaml: "), message
    return message


# --- valid documents ------------------------------------------------------------------------------


def test_a_minimal_document_loads_with_its_defaults(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(VALID)
    policy = load_policy(path)
    assert policy.version == "v7"
    assert policy.category_names == ["violating"]
    assert (policy.review_band.low, policy.review_band.high) == (0.3, 0.7)
    assert policy.audit_rate is None
    assert policy.examples == []
    assert policy.supersedes is None


def test_a_full_document_with_several_categories_loads() -> None:
    policy = parse_policy(
        """\
version: v7
supersedes: v6
description: Spam and scams are violating.
categories:
  - {name: violating, definition: Unsolicited bulk mail., block_threshold: 0.5}
  - {name: scam, definition: Fraud., block_threshold: 0.4}
review_band: {low: 0.2, high: 0.8}
audit_rate: 0.1
effective_at: 2025-03-01T00:00:00Z
examples:
  - {text: "Buy now!", label: violating, note: "new in v7"}
  - {text: "Send your bank details", label: scam}
  - {text: "Lunch tomorrow?", label: benign}
""",
        source="p.yaml",
    )
    assert policy.category_names == ["violating", "scam"]
    assert policy.supersedes == "v6"
    assert policy.audit_rate == 0.1
    assert [e.label for e in policy.examples] == ["violating", "scam", BENIGN]
    assert policy.effective_at is not None and policy.effective_at.year == 2025


def test_the_canonical_form_ignores_layout_but_not_content() -> None:
    a = parse_policy(VALID, source="a")
    b = parse_policy(
        "version: v7\ndescription: Spam is violating.\nreview_band: {high: 0.7, low: 0.3}\n"
        "categories: [{block_threshold: 0.5, definition: Unsolicited bulk mail., name: violating}]"
        "\n# a comment\n",
        source="b",
    )
    assert a.canonical_json() == b.canonical_json()
    assert a.sha256() == b.sha256()
    c = parse_policy(VALID.replace("low: 0.3", "low: 0.25"), source="c")
    assert c.sha256() != a.sha256()


# --- invalid documents: one line naming the field ------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("low: 0.3", "low: 1.3"), "review_band.low: Input should be less than or equal to 1"),
        (("high: 0.7", "high: -0.1"), "review_band.high: Input should be greater than or equal"),
        (("block_threshold: 0.5", "block_threshold: 2"), "categories.0.block_threshold: Input"),
        (("block_threshold: 0.5", "block_threshold: high"), "categories.0.block_threshold:"),
        (("definition: Unsolicited bulk mail.", "definition: ''"), "categories.0.definition:"),
        (("version: v7", "version: v 7"), "version: 'v 7' is not a plain name"),
        (("version: v7", "version: v7:x"), "version: 'v7:x' is not a plain name"),
        (("version: v7", "version: 2"), 'version: 2 is a number in YAML: quote it, e.g. "2"'),
        (("version: v7", "version: [v7]"), "version: Input should be a valid string"),
        (("version: v7", "version: active"), "version: 'active' is reserved"),
        (("description: Spam is violating.\n", ""), "description: Field required"),
        (("version: v7", "version: v7\ndescripton: typo"), "descripton: Extra inputs are not"),
        (("low: 0.3", "low: 0.3\n  middle: 0.5"), "review_band.middle: Extra inputs"),
    ],
)
def test_each_invalid_field_is_named_in_one_line(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in VALID
    assert expected in _refused(VALID.replace(old, new))


def test_the_message_names_the_file_and_field_exactly(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(VALID.replace("low: 0.3", "low: 1.5"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value) == (
        f"{path}: review_band.low: Input should be less than or equal to 1"
    )


def test_several_problems_report_the_first_and_count_the_rest() -> None:
    text = VALID.replace("low: 0.3", "low: 1.5").replace("high: 0.7", "high: 2")
    assert _refused(text) == (
        "policy.yaml: review_band.low: Input should be less than or equal to 1 (and 1 more)"
    )


def test_a_band_in_the_wrong_order_is_refused() -> None:
    message = _refused(VALID.replace("low: 0.3", "low: 0.8").replace("high: 0.7", "high: 0.2"))
    assert message == "policy.yaml: review_band.low: 0.8 must not exceed high (0.2)"


def test_an_empty_band_at_one_point_is_allowed() -> None:
    policy = parse_policy(VALID.replace("low: 0.3", "low: 0.7"), source="p")
    assert policy.review_band.low == policy.review_band.high == 0.7


def test_duplicate_category_names_are_refused() -> None:
    text = VALID.replace(
        "review_band:",
        "  - name: violating\n    definition: Again.\n    block_threshold: 0.4\nreview_band:",
    )
    assert _refused(text) == "policy.yaml: categories.1.name: duplicate category name 'violating'"


def test_benign_is_not_a_category_name() -> None:
    message = _refused(VALID.replace("name: violating", "name: benign"))
    assert message.startswith("policy.yaml: categories.0.name: 'benign' is reserved")


def test_a_policy_needs_a_category() -> None:
    text = VALID.split("categories:")[0] + "categories: []\nreview_band: {low: 0.3, high: 0.7}\n"
    assert "policy.yaml: categories: List should have at least 1 item" in _refused(text)


def test_example_labels_must_be_a_category_or_benign() -> None:
    text = VALID + "examples:\n  - {text: ok, label: benign}\n  - {text: x, label: spam}\n"
    assert _refused(text) == (
        "policy.yaml: examples.1.label: 'spam' is neither a category of this policy "
        "(violating) nor 'benign'"
    )
    assert "examples.0.text:" in _refused(VALID + "examples:\n  - {text: '', label: violating}\n")
    assert "examples.0.label: Field required" in _refused(VALID + "examples:\n  - {text: a}\n")


def test_a_version_does_not_supersede_itself() -> None:
    message = _refused(VALID + "supersedes: v7\n")
    assert message == "policy.yaml: supersedes: version 'v7' cannot supersede itself"


def test_effective_at_needs_a_time_zone() -> None:
    assert "effective_at: Input should have timezone info" in _refused(
        VALID + "effective_at: 2025-03-01 10:00:00\n"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VALID + "tags: [a,\n", "policy.yaml: line 11 column 1: expected the node content"),
        (
            VALID + "review_band: {low: 0.1, high: 0.2}\n",
            "policy.yaml: line 10 column 1: duplicate key 'review_band'",
        ),
        ("- a list\n", "policy.yaml: expected a mapping of policy fields, found a list"),
        ("", "policy.yaml: expected a mapping of policy fields, found nothing"),
    ],
)
def test_yaml_problems_are_one_line_with_the_position(text: str, expected: str) -> None:
    assert _refused(text).startswith(expected)


def test_merge_keys_may_be_overridden_and_a_key_that_cannot_be_hashed_is_refused() -> None:
    # `<<: {...}` (or `<<: *anchor`) is how YAML reuses a mapping: its keys are meant to be
    # overridden, so they do not count as written twice
    merged = VALID.replace(
        "review_band:\n  low: 0.3\n  high: 0.7\n",
        "review_band:\n  <<: {low: 0.3, high: 0.7}\n  high: 0.8\n",
    )
    assert merged != VALID
    band = parse_policy(merged, source="policy.yaml").review_band
    assert (band.low, band.high) == (0.3, 0.8)
    assert "found unhashable key" in _refused(VALID + "? [a, b]\n: 1\n")


def test_an_unreadable_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"missing\.yaml: cannot read the policy"):
        load_policy(tmp_path / "missing.yaml")


# --- the message ----------------------------------------------------------------------------------


def test_to_message_is_a_valid_policy_update_that_round_trips() -> None:
    policy = parse_policy(
        VALID + "examples:\n  - {text: Buy now, label: violating, note: new}\n"
        "  - {text: Hi mum, label: benign}\n",
        source="p",
    )
    fields = to_message(policy, now=1234.5)
    message = PolicyUpdate.model_validate(fields)
    assert message.policy_version == "v7"
    assert [(c.name, c.block_threshold) for c in message.categories] == [("violating", 0.5)]
    assert message.categories[0].definition == "Unsolicited bulk mail."
    assert (message.review_low, message.review_high) == (0.3, 0.7)
    assert message.examples == [
        {"text": "Buy now", "label": "violating", "note": "new"},
        {"text": "Hi mum", "label": "benign"},
    ]
    assert message.published_at == 1234.5
    assert decode(encode(message), PolicyUpdate) == message


# --- the shipped documents ------------------------------------------------------------------------


def _shipped(version: str) -> Policy:
    return load_policy(POLICIES / f"{version}.yaml")


def test_shipped_v1_matches_the_settings_defaults() -> None:
    v1, defaults = _shipped("v1"), PolicySettings()
    assert v1.version == defaults.version
    assert v1.category_names == [defaults.category]
    assert v1.categories[0].block_threshold == defaults.block_threshold
    assert (v1.review_band.low, v1.review_band.high) == (defaults.review_low, defaults.review_high)
    assert v1.examples == []


def test_shipped_v2_is_a_transition_from_v1() -> None:
    v1, v2 = _shipped("v1"), _shipped("v2")
    assert v2.supersedes == v1.version
    assert v2.category_names == v1.category_names
    # a wider review band and a raised audit sample while the new adapter is trained
    assert v2.review_band.low < v1.review_band.low
    assert v2.review_band.high > v1.review_band.high
    assert v2.audit_rate is not None and v2.audit_rate > ReviewSettings().audit_rate
    # a handful of promotional mails, now violating
    assert 3 <= len(v2.examples) <= 5
    assert {e.label for e in v2.examples} == {"violating"}
    assert all(e.text.startswith("Subject: ") for e in v2.examples)
    definition = v2.categories[0].definition.lower()
    assert "newsletter" in definition and "marketing" in definition
    PolicyUpdate.model_validate(to_message(v2, now=0.0))
