"""An email as the text a moderator would see: Subject and body only, HTML reduced to text, quoted
headers and MIME part headers dropped (they give the label away)."""

from __future__ import annotations

import contextlib
import email
import email.header
import email.message
import email.policy
import html
import itertools
import re
from collections.abc import Iterator
from email.errors import HeaderParseError
from html.parser import HTMLParser

__all__ = ["email_to_text"]


_BLOCK_TAGS = frozenset(
    {"address", "article", "blockquote", "br", "dd", "div", "dl", "dt", "footer", "form", "h1"}
    | {"h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "ol", "p", "pre", "section", "table"}
    | {"td", "th", "title", "tr", "ul"}
)


# Not "head": spam often opens <head> and never closes it, which would hide the whole body.
_SKIP_TAGS = frozenset({"script", "style"})


_LOOKS_LIKE_HTML = re.compile(r"<\s*(html|body|table|font|div|p|br|a\s)[\s>/]", re.IGNORECASE)


# Trace and X- headers quoted inside a body (forwarded spam, bounces, list threads about spam
# filtering) carry the same routing and spam-trap signals as the real headers; they are dropped
# with their continuation lines. Quoted From:/To:/Date: lines of ordinary replies are kept.
_QUOTED_HEADER = re.compile(
    r"^[ \t>]*(?:received|return-path|delivered-to|envelope-to|message-id|x-[a-z0-9-]+)[ \t]*:",
    re.IGNORECASE,
)


# Charsets that old mail declares while actually writing Windows-1252 (the WHATWG rule).
_CP1252_ALIASES = frozenset({"us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1"})


_PART_HEADER = re.compile(r"^content-(?:type|transfer-encoding|disposition)[ \t]*:", re.I)


_SPACES = re.compile(r"[ \t\f\v\u00a0\u200b]+")


_BLANK_LINES = re.compile(r"\n{3,}")


class _TextExtractor(HTMLParser):
    """Collects the visible text of an HTML document; block-level tags become line breaks.
    (The stdlib parser is lenient with the broken HTML that spam is full of.)"""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self._skip_depth = 0  # an unclosed <script> or <style> must not hide the body
        if tag in _SKIP_TAGS:
            self._skip_depth += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.parts.append(data)


def _html_to_text(markup: str) -> str:
    parser = _TextExtractor()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:
        # HTMLParser is lenient but not bulletproof; a crude tag strip is better than nothing.
        return html.unescape(re.sub(r"<[^>]*>", " ", markup))
    return "".join(parser.parts)


def _normalise_whitespace(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _strip_quoted_headers(text: str) -> str:
    kept: list[str] = []
    header_lead: int | None = None  # indentation of the header being dropped, if any
    for line in text.splitlines():
        lead = len(line) - len(line.lstrip(" \t>"))
        if _QUOTED_HEADER.match(line):
            header_lead = lead
            continue
        if header_lead is not None and line.strip() and lead > header_lead:
            continue  # continuation line of the header just dropped (indented further)
        header_lead = None
        kept.append(line)
    return "\n".join(kept)


def _decode_bytes(payload: bytes, charset: str | None) -> str:
    declared = (charset or "").strip().lower()
    if declared in _CP1252_ALIASES:
        declared = "cp1252"
    for candidate in (declared, "utf-8", "cp1252"):
        if not candidate:
            continue
        try:
            return payload.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    # Latin-1 maps every byte, so nothing is lost even when all else fails.
    return payload.decode("latin-1")


def _subject(msg: email.message.Message) -> str:
    """The decoded Subject: raw 8-bit bytes (UTF-8, else Windows-1252) and RFC 2047 words."""
    raw = next((value for name, value in msg.raw_items() if name.lower() == "subject"), "")
    if not isinstance(raw, str):
        raw = str(raw)
    # compat32 keeps undeclared 8-bit header bytes as surrogate escapes; decode them properly.
    raw = _decode_bytes(raw.encode("ascii", "surrogateescape"), None)
    if "=?" in raw:  # RFC 2047 encoded-words; a broken one stays as written
        with contextlib.suppress(LookupError, UnicodeError, ValueError, HeaderParseError):
            raw = str(email.header.make_header(email.header.decode_header(raw)))
    return raw.replace("\n", " ")


def _part_text(part: email.message.Message) -> str:
    """The decoded text of one leaf part (quoted-printable and base64 undone)."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if isinstance(payload, bytes):
        return _decode_bytes(payload, part.get_content_charset())
    fallback = part.get_payload()
    return fallback if isinstance(fallback, str) else ""


def _hidden_boundary(text: str) -> str | None:
    """The boundary of a multipart body whose multipart header was lost (a missing or broken
    Content-Type at the top): a `--<boundary>` line directly followed by a `Content-*` line."""
    lines = text.splitlines()
    for line, following in itertools.pairwise(lines):
        boundary = line.rstrip()[2:]
        if (
            line.startswith("--")
            and boundary.strip()
            and '"' not in boundary
            and _PART_HEADER.match(following)
        ):
            return boundary
    return None


def _text_parts(msg: email.message.Message, depth: int = 0) -> Iterator[tuple[str, str]]:
    """(content type, decoded text) of every inline text/plain and text/html leaf, in order.
    Nested messages (forwards, bounces) contribute their bodies, never their headers."""
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            continue
        disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        if disposition == "attachment":
            continue
        text = _part_text(part)
        boundary = _hidden_boundary(text) if depth < 2 else None
        if boundary is None:
            yield ctype, text
            continue
        # Re-read the body as the multipart it really is; its preamble (often stray headers of
        # a mangled message) is dropped with the wrapper.
        wrapper = f'Content-Type: multipart/mixed; boundary="{boundary}"\n\n{text}'
        inner = email.message_from_string(wrapper, policy=email.policy.compat32)
        yield from _text_parts(inner, depth + 1)


def _body_text(msg: email.message.Message) -> str:
    parts = list(_text_parts(msg))
    plain = [text for ctype, text in parts if ctype == "text/plain" and text.strip()]
    if plain:
        # Some mailers send HTML labelled as text/plain (or with no Content-Type at all).
        return "\n\n".join(_html_to_text(t) if _LOOKS_LIKE_HTML.search(t) else t for t in plain)
    return "\n\n".join(_html_to_text(text) for ctype, text in parts if ctype == "text/html")


def email_to_text(raw: str | bytes) -> str:
    """Reduce a raw RFC 822 message to `"Subject: <subject>\\n\\n<body>"`.

    Every header except Subject is dropped (Received chains, addresses, X-Spam-* and the like
    give the label away), and so are trace and X- header lines quoted inside the body.
    Quoted-printable and base64 bodies are decoded; text/plain parts are preferred, text/html is
    reduced to its visible text when there is no plain part; whitespace is collapsed. Broken mail
    is handled as well as the stdlib parser allows. Returns "" when neither a subject nor any body
    text is left.

    >>> email_to_text("Received: from x\\nSubject: Hi\\nFrom: a@b.c\\n\\nHello  there\\n")
    'Subject: Hi\\n\\nHello there'
    """
    # compat32 is the most forgiving policy with the malformed headers found in old spam.
    if isinstance(raw, bytes):
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    else:
        msg = email.message_from_string(raw, policy=email.policy.compat32)
    subject = _normalise_whitespace(_subject(msg))
    body = _normalise_whitespace(_strip_quoted_headers(_body_text(msg)))
    if not subject and not body:
        return ""
    return f"Subject: {subject}\n\n{body}".rstrip()
