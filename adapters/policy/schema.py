"""Moderation policies: a versioned YAML document (categories with definitions and block
thresholds, the review band, and for a transition a raised audit rate and a handful of example
items for what changed) and its validation. The record in Redis is `store.py`; the message
announced on the policy topic is `message.py`.

`load_policy` turns any problem with a file into one `PolicyError` line that names the file and
the field, e.g. ``policy.yaml: review_band.low: Input should be less than or equal to 1``.

    >>> policy = parse_policy(
    ...     "version: v1\\n"
    ...     "description: Bulk mail\\n"
    ...     "categories: [{name: violating, definition: Spam., block_threshold: 0.5}]\\n"
    ...     "review_band: {low: 0.3, high: 0.7}\\n",
    ...     source="v1.yaml",
    ... )
    >>> from adapters.policy.message import to_message
    >>> to_message(policy, now=0.0)["review_low"]
    0.3
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Hashable
from pathlib import Path
from typing import Annotated, Any

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

from models.errors import BorderlineError

__all__ = [
    "BENIGN",
    "Category",
    "Example",
    "Policy",
    "PolicyError",
    "ReviewBand",
    "load_policy",
    "parse_policy",
]

# p:policy:{version} must not collide with the store's own keys
RESERVED_VERSIONS = frozenset({"active", "history"})


BENIGN = "benign"  # the label of an item that violates no category: never a category name


MAX_EXAMPLES = 50  # "a handful": they travel on every policy message and drive nearest neighbours


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
        if version in RESERVED_VERSIONS:
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
