"""Corpus hygiene before the label-efficiency draws (issue 11, item 6): list footers that give
the label away are cut, and duplicates are dropped so no test item has a twin in the pool."""

from __future__ import annotations

import doctest

import pytest

import adapters.offline.boilerplate
from adapters.offline.boilerplate import FOOTER_PATTERNS, clean_corpus, clean_text, dedupe

BODY = "Has anyone tried the new kernel on a ThinkPad?\n\nThanks, Kate"

FOOTERS = {
    "mailman": "\n\n_______________________________________________\nRPM-List mailing list "
    "<RPM-List@freshrpms.net>\nhttp://lists.freshrpms.net/mailman/listinfo/rpm-list\n",
    "listinfo-line": "\n\nhttp://xent.com/mailman/listinfo/fork\n",
    "ilug": "\n\n--\nIrish Linux Users' Group: ilug@linux.ie\nhttp://www.linux.ie/mailman/"
    "listinfo/ilug for (un)subscription information.\nList maintainer: listmaster@linux.ie",
    "sourceforge-sponsor": "\n\n-------------------------------------------------------\n"
    "This sf.net email is sponsored by: OSDN - Tired of that same old\ncell phone?",
    "yahoo-groups": "\n\n------------------------ Yahoo! Groups Sponsor ---------------------~-->"
    "\n4 DVDs Free +s&p Join Now\n\nTo unsubscribe from this group, send an email to:\n"
    "forteana-unsubscribe@egroups.com",
    "use-perl": "\n\n======================================================================\n\n"
    "You have received this message because you subscribed to it\non use Perl. To stop "
    "receiving this and other\nmessages from use Perl",
}


def test_doctests() -> None:
    result = doctest.testmod(adapters.offline.boilerplate)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("name", sorted(FOOTERS))
def test_each_footer_is_cut_and_named(name: str) -> None:
    text, hits = clean_text(BODY + FOOTERS[name])
    assert text == BODY
    assert name in hits


def test_every_pattern_has_a_case() -> None:
    assert set(FOOTERS) == set(FOOTER_PATTERNS)


def test_a_text_without_boilerplate_is_unchanged() -> None:
    spam = "Subject: FREE pills\n\nBuy now -- limited offer!\nTo be removed reply REMOVE"
    assert clean_text(spam) == (spam, ())


def test_the_feed_header_is_removed_and_the_item_kept() -> None:
    text = "Subject: Man kills self\n\nURL: http://boingboing.net/#85\nDate: Not supplied\n\nSteve"
    assert clean_text(text) == ("Subject: Man kills self\n\n\nSteve", ("feed-header",))


def test_dedupe_keeps_the_first_and_drops_label_conflicts_and_empties() -> None:
    texts = ["Hello  World", "hello world", "spam!", "Spam!", "", "unique"]
    labels = [0, 0, 1, 0, 0, 1]
    kept, report = dedupe(texts, labels)
    assert kept == [0, 5]
    assert report == {"duplicates_dropped": 1, "conflicting_dropped": 2, "empty_dropped": 1}


def test_clean_corpus_dedupes_after_stripping_and_counts_matches_per_label() -> None:
    texts = [BODY + FOOTERS["ilug"], BODY, "Buy pills" + FOOTERS["mailman"], "other"]
    kept, cleaned, report = clean_corpus(texts, [0, 0, 1, 0])
    # the first two are the same text once the footer is cut
    assert kept == [0, 2, 3] and cleaned == [BODY, "Buy pills", "other"]
    assert report["items_in"] == 4 and report["items_kept"] == 3
    assert report["duplicates_dropped"] == 1
    assert report["patterns_matched"]["ilug"] == {"benign": 1, "violating": 0}
    assert report["patterns_matched"]["mailman"] == {"benign": 0, "violating": 1}
