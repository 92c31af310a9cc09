"""The pure half of the decision cache: which texts count as the same creative, the key a decision
is cached under, the bytes a cached score is kept as, and the in-process LRU with its bounds. No
I/O; the Redis tier and the classifier's use of it are `streams.service.shared_cache`.

Normalisation, in this order: Unicode NFKC (full-width and compatibility forms fold to plain
ones), tracking parameters dropped from http(s) URLs (``utm_*`` and the click ids in
`TRACKING_PARAMETERS`, matched without case; the other parameters keep their order and bytes),
case folded (`str.casefold`), runs of whitespace made one space, ends stripped. The encoder is
uncased and splits on whitespace, so case and spacing never changed a score; NFKC and the
tracking parameters make copies of one ad that differ only there the same creative on purpose.

>>> normalise("  Buy  NOW:\\thttps://x.example/p?id=7&utm_source=fb&gclid=Zz  ")
'buy now: https://x.example/p?id=7'
>>> key = cache_key(text_hash("Buy now"), model="m1", adapter="a1", policy="v1")
>>> key == cache_key(text_hash("BUY  now"), model="m1", adapter="a1", policy="v1")
True
>>> key == cache_key(text_hash("Buy now"), model="m1", adapter="a2", policy="v1")
False
"""

from __future__ import annotations

import hashlib
import re
import struct
import unicodedata
from collections import OrderedDict

import numpy as np

__all__ = [
    "ENTRY_OVERHEAD_BYTES",
    "TRACKING_PARAMETERS",
    "TRACKING_PREFIXES",
    "DecisionLRU",
    "cache_key",
    "normalise",
    "pack_scores",
    "text_hash",
    "unpack_scores",
]

TRACKING_PREFIXES = ("utm_",)
TRACKING_PARAMETERS = frozenset(
    {
        "gclid",  # Google Ads
        "gbraid",
        "wbraid",
        "dclid",  # Google Display
        "fbclid",  # Meta
        "msclkid",  # Microsoft Ads
        "yclid",  # Yandex
        "ttclid",  # TikTok
        "twclid",  # X
        "li_fat_id",  # LinkedIn
        "mc_cid",  # Mailchimp
        "mc_eid",
        "igshid",  # Instagram share
        "_ga",  # Google Analytics linker
        "_gl",
    }
)
ENTRY_OVERHEAD_BYTES = 160
"""What one LRU entry costs beyond its key and value bytes (the dict slot, two str/bytes
headers), counted in the byte bound so that many tiny entries cannot outgrow it."""

_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
_HEADER = struct.Struct("<HH")  # labels, embedding dimension


def _tracking(parameter: str) -> bool:
    name = parameter.split("=", 1)[0].casefold()
    return name in TRACKING_PARAMETERS or name.startswith(TRACKING_PREFIXES)


def _untracked(match: re.Match[str]) -> str:
    url = match.group(0)
    head, hash_mark, fragment = url.partition("#")
    base, question, query = head.partition("?")
    if not question:
        return url
    kept = [p for p in query.split("&") if p and not _tracking(p)]
    return base + ("?" + "&".join(kept) if kept else "") + hash_mark + fragment


def normalise(text: str) -> str:
    """The text as the cache compares it (see the module's docstring)."""
    text = unicodedata.normalize("NFKC", text)
    text = _URL.sub(_untracked, text)
    return _SPACE.sub(" ", text.casefold()).strip()


def text_hash(text: str) -> str:
    """sha256 of the normalised text, hex (also what review twins are recognised by)."""
    return hashlib.sha256(normalise(text).encode("utf-8", "surrogatepass")).hexdigest()


def cache_key(digest: str, *, model: str, adapter: str, policy: str) -> str:
    """Where a decision on the text with ``digest`` is cached: it names the base model, the
    serving adapter and the policy version, so a swap or a new policy never reads an old one."""
    parts = "\x00".join((model, adapter, policy, digest))
    return hashlib.sha256(parts.encode("utf-8", "surrogatepass")).hexdigest()


def pack_scores(probabilities: np.ndarray, embedding: np.ndarray) -> bytes:
    """One item's scores as bytes: the probability row (one per label) and its embedding."""
    p = np.ascontiguousarray(probabilities, dtype="<f4").ravel()
    e = np.ascontiguousarray(embedding, dtype="<f4").ravel()
    return _HEADER.pack(p.size, e.size) + p.tobytes() + e.tobytes()


def unpack_scores(blob: bytes, labels: int, dim: int) -> tuple[np.ndarray, np.ndarray] | None:
    """`pack_scores` undone, or None when ``blob`` is not scores of that shape (a damaged or
    foreign entry is a miss, never an error).

    >>> p, e = unpack_scores(pack_scores(np.array([0.25, 0.75]), np.ones(3)), 2, 3)
    >>> p.tolist(), e.tolist()
    ([0.25, 0.75], [1.0, 1.0, 1.0])
    >>> unpack_scores(b"junk", 2, 3) is None
    True
    """
    if len(blob) != _HEADER.size + 4 * (labels + dim):
        return None
    if _HEADER.unpack_from(blob) != (labels, dim):
        return None
    values = np.frombuffer(blob, dtype="<f4", offset=_HEADER.size).astype(np.float32)
    if not np.isfinite(values).all():
        return None
    return values[:labels], values[labels:]


class DecisionLRU:
    """Least recently used entries first out, bounded in entries and in bytes (key, value and
    `ENTRY_OVERHEAD_BYTES` each). Counts its evictions; an entry larger than the byte bound on its
    own is not kept.

    >>> lru = DecisionLRU(max_items=2, max_bytes=10_000)
    >>> for k in "abc":
    ...     lru.put(k, b"x")
    >>> lru.get("a"), lru.get("c"), lru.evictions
    (None, b'x', 1)
    """

    def __init__(self, *, max_items: int, max_bytes: int) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError(f"bounds must be positive: {max_items} items, {max_bytes} bytes")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def cost(key: str, value: bytes) -> int:
        return len(key) + len(value) + ENTRY_OVERHEAD_BYTES

    def get(self, key: str) -> bytes | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: bytes) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= self.cost(key, old)
        size = self.cost(key, value)
        if size > self.max_bytes:
            return
        self._entries[key] = value
        self.bytes += size
        while len(self._entries) > self.max_items or self.bytes > self.max_bytes:
            evicted, gone = self._entries.popitem(last=False)
            self.bytes -= self.cost(evicted, gone)
            self.evictions += 1
