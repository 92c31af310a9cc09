"""Corpus hygiene for the label-efficiency benchmark: mailing-list footers and other boilerplate
that give an item's label away are cut from each text, then exact duplicates are dropped before
any test set or pool is drawn (a test item with a twin in the pool is scored on its own label).

In the SpamAssassin corpus the ham is mailing-list traffic: 1,016 ham texts end in a Mailman
footer, 544 in the Irish Linux Users' Group footer, 133 in a Yahoo! Groups footer, so a model can
learn "has a list footer" instead of "is spam". Each pattern below marks where a footer starts;
the text is cut there. Pure: strings in, strings and counts out.

>>> clean_text("Meet at six.\\n\\n--\\nIrish Linux Users' Group: ilug@linux.ie\\nhttp://x")
('Meet at six.', ('ilug',))
>>> kept, report = dedupe(["a b", "a  b", "c"], [0, 0, 1])
>>> kept, report["duplicates_dropped"]
([0, 2], 1)"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["FOOTER_PATTERNS", "clean_corpus", "clean_text", "dedupe", "normalised"]


FOOTER_PATTERNS: Mapping[str, re.Pattern[str]] = {
    # "____\nFoo mailing list\nFoo@host\nhttp://host/mailman/listinfo/foo" (Mailman, any list)
    "mailman": re.compile(
        r"^_{20,}[ \t]*\n(?:[^\n]*\n){0,3}?[^\n]*(?:mailman/listinfo|/lists/listinfo|mailing list)",
        re.MULTILINE,
    ),
    # a bare list URL as the last words (the FoRK list's footer has no rule above it)
    "listinfo-line": re.compile(r"^[ \t]*https?://\S*/(?:mailman/)?listinfo/\S*[ \t]*$", re.M),
    "ilug": re.compile(r"^(?:--[ \t]*\n)?Irish Linux Users' Group: ilug@linux\.ie", re.M),
    "sourceforge-sponsor": re.compile(
        r"^(?:-{20,}[ \t]*\n)?This sf\.net email is sponsored by", re.M
    ),
    "yahoo-groups": re.compile(
        r"^(?:-+ ?Yahoo! Groups Sponsor|To unsubscribe from this group, send an email to"
        r"|Your use of Yahoo! Groups is subject to)",
        re.M,
    ),
    "use-perl": re.compile(
        r"^(?:={20,}\s*\n\s*)?You have received this message because you subscribed to it\s+on "
        r"use Perl",
        re.M,
    ),
}
"""Where a footer starts (the text is cut from the earliest match to its end)."""


_FEED_HEADER = re.compile(r"^URL: \S+\nDate: Not supplied\n", re.M)
"""The RSS-to-mail gateway's header lines (98 ham, no spam): removed, the item's text kept."""


_TRAILING_RULES = re.compile(r"(?:\s*\n[ \t]*(?:-{2,}|_{2,}|={2,}|~{2,})[ \t]*)+\s*\Z")


_SPACES = re.compile(r"\s+")


def clean_text(text: str) -> tuple[str, tuple[str, ...]]:
    """The text without its footer and feed header, and the names of the patterns that matched."""
    hits: list[str] = []
    body = text
    if _FEED_HEADER.search(body):
        body = _FEED_HEADER.sub("", body)
        hits.append("feed-header")
    cut = len(body)
    for name, pattern in FOOTER_PATTERNS.items():
        found = pattern.search(body)
        if found is not None:
            hits.append(name)
            cut = min(cut, found.start())
    body = _TRAILING_RULES.sub("", body[:cut]).strip()
    return body, tuple(hits)


def normalised(text: str) -> str:
    """The duplicate key: whitespace runs collapsed, case folded."""
    return _SPACES.sub(" ", text).strip().casefold()


def dedupe(texts: Sequence[str], labels: Sequence[int]) -> tuple[list[int], dict[str, int]]:
    """Indices to keep: the first of every group of texts equal after `normalised`; a group whose
    copies disagree on the label is dropped whole (its label is not known). Empty texts go too."""
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        groups.setdefault(normalised(text), []).append(i)
    kept: list[int] = []
    conflicting = empty = 0
    for key, members in groups.items():
        if not key:
            empty += len(members)
        elif len({labels[i] for i in members}) > 1:
            conflicting += len(members)
        else:
            kept.append(members[0])
    kept.sort()
    return kept, {
        "duplicates_dropped": len(texts) - len(kept) - conflicting - empty,
        "conflicting_dropped": conflicting,
        "empty_dropped": empty,
    }


def clean_corpus(
    texts: Sequence[str], labels: Sequence[int]
) -> tuple[list[int], list[str], dict[str, Any]]:
    """Strip every text, then dedupe: (kept indices into the input, their cleaned texts, a report
    with the matches per pattern and label and the drop counts)."""
    cleaned: list[str] = []
    matches: Counter[tuple[str, int]] = Counter()
    for text, label in zip(texts, labels, strict=True):
        body, hits = clean_text(text)
        cleaned.append(body)
        matches.update((name, int(label)) for name in hits)
    kept, drops = dedupe(cleaned, labels)
    names = ["feed-header", *FOOTER_PATTERNS]
    report: dict[str, Any] = {
        "items_in": len(texts),
        "items_kept": len(kept),
        **drops,
        "patterns_matched": {
            name: {"benign": matches[(name, 0)], "violating": matches[(name, 1)]} for name in names
        },
    }
    return kept, [cleaned[i] for i in kept], report
