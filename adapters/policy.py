"""Moderation policies: a versioned YAML document (categories with definitions and block
thresholds, the review band, and for a transition a raised audit rate and a handful of example
items for what changed), its validation, and its record in Redis.

`load_policy` turns any problem with a file into one `PolicyError` line that names the file and
the field, e.g. ``policy.yaml: review_band.low: Input should be less than or equal to 1``.

`PolicyStore.publish` is one Lua script, so it is atomic: the document is stored under its
version (a version never names two documents), the active version is set, the publication is
appended to the history with who and when, and it is announced on a pub/sub channel. Publishing
the active document again changes nothing; publishing an older, already stored version makes it
active again (recorded as ``reactivated``).

Keys (prefix ``p``): ``p:policy:{version}`` (the document, canonical JSON), ``p:policy:active``
(the active version, a plain string), ``p:policy:history`` (publications, oldest first); channel
``p:policy:events`` (the publication record, JSON).

    >>> policy = parse_policy(
    ...     "version: v1\\n"
    ...     "description: Bulk mail\\n"
    ...     "categories: [{name: violating, definition: Spam., block_threshold: 0.5}]\\n"
    ...     "review_band: {low: 0.3, high: 0.7}\\n",
    ...     source="v1.yaml",
    ... )
    >>> to_message(policy, now=0.0)["review_low"]
    0.3
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Hashable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from models.errors import BorderlineError

__all__ = [
    "BENIGN",
    "Category",
    "Example",
    "Policy",
    "PolicyError",
    "PolicyRecord",
    "PolicyStore",
    "Publication",
    "ReviewBand",
    "load_policy",
    "parse_policy",
    "to_message",
]

BENIGN = "benign"  # the label of an item that violates no category: never a category name
MAX_EXAMPLES = 50  # "a handful": they travel on every policy message and drive nearest neighbours

_STORE_KEYS = frozenset({"active", "history"})  # p:policy:{version} must not collide with them
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class PolicyError(BorderlineError):
    """An invalid policy document, or a publication the store refuses."""


class _At(ValueError):
    """A validation problem of a nested field, raised by a validator of an outer model:
    ``path`` is appended to the location pydantic reports, so the message names the field."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


def _plain_name(value: object) -> object:
    """Versions and category names are parts of Redis keys, Kafka keys and labels."""
    if isinstance(value, bool) or not isinstance(value, str):
        if isinstance(value, int | float):
            # YAML reads `version: 2` as a number (and `1.10` as 1.1): insist on quotes
            raise ValueError(f'{value!r} is a number in YAML: quote it, e.g. "{value}"')
        return value  # pydantic reports the wrong type
    if not _PLAIN.match(value):
        raise ValueError(
            f"{value!r} is not a plain name (1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit)"
        )
    return value


PlainName = Annotated[str, BeforeValidator(_plain_name)]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Category(_Doc):
    name: PlainName
    definition: str = Field(min_length=1, description="what the category forbids, for experts")
    block_threshold: float = Field(ge=0, le=1, description="block at or above this probability")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name == BENIGN:
            raise ValueError(f"{BENIGN!r} is reserved for items that violate no category")
        return name


class ReviewBand(_Doc):
    low: float = Field(ge=0, le=1)
    high: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> ReviewBand:
        if self.low > self.high:
            raise _At(("low",), f"{self.low} must not exceed high ({self.high})")
        return self


class Example(_Doc):
    text: str = Field(min_length=1)
    label: PlainName = Field(description="a category of this policy, or 'benign'")
    note: str | None = None


class Policy(_Doc):
    """One version of the moderation policy, as written in its YAML document."""

    version: PlainName
    supersedes: PlainName | None = Field(default=None, description="the previous version")
    description: str = Field(min_length=1)
    categories: list[Category] = Field(min_length=1)
    review_band: ReviewBand
    audit_rate: float | None = Field(
        default=None, ge=0, le=1, description="random audit share; raised during a transition"
    )
    examples: list[Example] = Field(
        default_factory=list,
        max_length=MAX_EXAMPLES,
        description="a handful of items illustrating what changed from the previous version",
    )
    effective_at: AwareDatetime | None = Field(
        default=None,
        description="when the policy owners say it takes effect (informational: publishing "
        "activates a policy at once)",
    )

    @field_validator("version")
    @classmethod
    def _not_a_store_key(cls, version: str) -> str:
        if version in _STORE_KEYS:
            raise ValueError(f"{version!r} is reserved (a key of the policy store)")
        return version

    @field_validator("categories")
    @classmethod
    def _unique(cls, categories: list[Category]) -> list[Category]:
        seen: set[str] = set()
        for i, category in enumerate(categories):
            if category.name in seen:
                raise _At((i, "name"), f"duplicate category name {category.name!r}")
            seen.add(category.name)
        return categories

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        allowed = [c.name for c in self.categories]
        for i, example in enumerate(self.examples):
            if example.label != BENIGN and example.label not in allowed:
                raise _At(
                    ("examples", i, "label"),
                    f"{example.label!r} is neither a category of this policy "
                    f"({', '.join(allowed)}) nor {BENIGN!r}",
                )
        if self.supersedes == self.version:
            raise _At(("supersedes",), f"version {self.version!r} cannot supersede itself")
        return self

    @property
    def category_names(self) -> list[str]:
        return [c.name for c in self.categories]

    def canonical_json(self) -> str:
        """The document as stored: the same policy always gives the same bytes, however its
        YAML was laid out."""
        return self.model_dump_json(exclude_none=True)

    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


# --- reading documents ---------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key written twice is an error, not "last one wins"
    (a second `review_band:` would silently replace the first)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Hashable, Any]:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` keys may be overridden: that is what they are for
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            continue  # construct_mapping reports it
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    loader.flatten_mapping(node)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _where(error: Any) -> str:
    loc: tuple[str | int, ...] = tuple(error["loc"])
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, _At):
        loc += cause.path
    return ".".join(str(part) for part in loc) or "<document>"


def _message(error: Any) -> str:
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, ValueError):
        return str(cause)  # our own words, without pydantic's "Value error, " prefix
    return str(error["msg"])


def parse_policy(text: str, *, source: str) -> Policy:
    """Validate a policy document; ``source`` (a file name) starts every error message."""
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
        raise PolicyError(f"{source}: {at}{problem}") from None
    if not isinstance(doc, dict):
        found = "nothing" if doc is None else f"a {type(doc).__name__}"
        raise PolicyError(f"{source}: expected a mapping of policy fields, found {found}")
    try:
        return Policy.model_validate(doc)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        line = f"{source}: {_where(errors[0])}: {_message(errors[0])}{more}"
        raise PolicyError(" ".join(line.split())) from None  # one line, whatever the input


def load_policy(path: Path | str) -> Policy:
    """Read and validate a policy file; every problem is one `PolicyError` line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PolicyError(f"{path}: cannot read the policy: {reason}") from None
    return parse_policy(text, source=str(path))


def to_message(policy: Policy, *, now: float) -> dict[str, Any]:
    """The fields of a ``PolicyUpdate`` message for ``policy`` published at ``now`` (the streams
    side builds and validates the message)."""
    return {
        "policy_version": policy.version,
        "categories": [c.model_dump() for c in policy.categories],
        "review_low": policy.review_band.low,
        "review_high": policy.review_band.high,
        "examples": [e.model_dump(exclude_none=True) for e in policy.examples],
        "published_at": now,
    }


# --- the store -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyRecord:
    """One publication: which version became active, instead of which, by whom and when."""

    version: str
    previous: str | None
    action: Literal["published", "reactivated"]
    actor: str
    at: float
    sha256: str

    @classmethod
    def parse(cls, raw: bytes | str) -> PolicyRecord:
        doc = json.loads(raw)
        action = doc["action"]
        if action not in ("published", "reactivated"):
            raise PolicyError(f"unknown policy record action {action!r}")
        return cls(
            version=doc["version"],
            previous=doc.get("previous") or None,
            action=action,
            actor=doc["actor"],
            at=float(doc["at"]),
            sha256=doc["sha256"],
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Publication:
    """What `PolicyStore.publish` did: ``changed`` is False when the document was already the
    active one (``record`` is then that earlier publication)."""

    record: PolicyRecord
    changed: bool


# KEYS: document, active, history; ARGV: document JSON, version, actor, now, channel, sha256
# Returns {changed (0/1), record JSON}.
_PUBLISH = """
local stored = redis.call('GET', KEYS[1])
if stored and stored ~= ARGV[1] then return redis.error_reply('TAKEN') end
local current = redis.call('GET', KEYS[2])
if current == ARGV[2] then
  return {0, redis.call('LINDEX', KEYS[3], -1)}
end
local action = 'published'
if stored then action = 'reactivated' else redis.call('SET', KEYS[1], ARGV[1]) end
local rec = cjson.encode({version=ARGV[2], previous=current, action=action, actor=ARGV[3],
  at=tonumber(ARGV[4]), sha256=ARGV[6]})
redis.call('SET', KEYS[2], ARGV[2])
redis.call('RPUSH', KEYS[3], rec)
redis.call('PUBLISH', ARGV[5], rec)
return {1, rec}
"""


class PolicyStore:
    """Published policies in Redis (see the module docstring for the keys)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._publish = redis.register_script(_PUBLISH)

    # --- keys -------------------------------------------------------------------------------
    def _document(self, version: str) -> str:
        return f"{self.prefix}:policy:{version}"

    @property
    def _active(self) -> str:
        return f"{self.prefix}:policy:active"

    @property
    def _history(self) -> str:
        return f"{self.prefix}:policy:history"

    @property
    def channel(self) -> str:
        return f"{self.prefix}:policy:events"

    # --- writing ----------------------------------------------------------------------------
    async def publish(self, policy: Policy, *, actor: str, now: float) -> Publication:
        """Store ``policy`` and make it the active one, atomically; announce it on `channel`.
        The same document again is a no-op; another document under a stored version is
        refused."""
        try:
            changed, raw = await self._publish(
                keys=[self._document(policy.version), self._active, self._history],
                args=[
                    policy.canonical_json(),
                    policy.version,
                    actor,
                    repr(float(now)),
                    self.channel,
                    policy.sha256(),
                ],
            )
        except ResponseError as exc:
            if str(exc).startswith("TAKEN"):
                stored = await self.get(policy.version)
                raise PolicyError(
                    f"policy version {policy.version!r} is already published with another "
                    f"document (sha256 {stored.sha256()[:12]}, this one {policy.sha256()[:12]}): "
                    "give the new document a new version"
                ) from None
            raise
        return Publication(record=PolicyRecord.parse(raw), changed=bool(changed))

    # --- reading ----------------------------------------------------------------------------
    async def active_version(self) -> str | None:
        raw = await self.redis.get(self._active)
        return None if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))

    async def active(self) -> Policy | None:
        """The active policy, or None when none was ever published."""
        version = await self.active_version()
        return None if version is None else await self.get(version)

    async def get(self, version: str) -> Policy:
        raw = await self.redis.get(self._document(version))
        if raw is None:
            raise PolicyError(
                f"unknown policy version {version!r} (see `borderline policy history`)"
            )
        return Policy.model_validate_json(raw)

    async def history(self) -> list[PolicyRecord]:
        """Every publication, oldest first."""
        return [PolicyRecord.parse(raw) for raw in await self.redis.lrange(self._history, 0, -1)]

    async def record(self, version: str) -> PolicyRecord | None:
        """The latest publication of ``version``, or None if it was never published."""
        for record in reversed(await self.history()):
            if record.version == version:
                return record
        return None
