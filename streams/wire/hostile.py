"""Reading bytes written by an adversary: every check that must hold before a message's JSON is
trusted, each raising `MessageError` with a stable reason, so that whatever one message holds
(any size, any nesting, any code point) costs that message a dead letter and nothing else.

- size first, before anything is parsed (``value_too_large``);
- nesting depth, by a scan that only runs when the value holds many brackets
  (``too_deeply_nested``; Python's parser would otherwise raise `RecursionError`);
- JSON proper, with ``NaN`` and ``Infinity`` refused (``invalid_json``; they are not JSON),
  and an integer longer than Python converts (4,300 digits; ``invalid_json`` too);
- lone UTF-16 surrogates (``"\\ud800"``) refused (``invalid_unicode``): such a string cannot be
  encoded as UTF-8 again, so the decision or dead letter about it could never be written.

    >>> parse_json(b'{"a": [1, 2]}', max_bytes=100, max_depth=4)
    {'a': [1, 2]}
    >>> parse_json(b"[[[[[1]]]]]", max_bytes=100, max_depth=4)
    Traceback (most recent call last):
    ...
    streams.wire.errors.MessageError: too_deeply_nested: nesting deeper than 4 levels
"""

from __future__ import annotations

import json
import re
from typing import Any

from streams.wire.errors import MessageError

__all__ = ["nesting_depth", "parse_json"]

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def nesting_depth(raw: bytes, stop_above: int) -> int:
    """The deepest nesting of arrays and objects in JSON text, ignoring brackets inside strings;
    stops counting once it passes ``stop_above``. Written by hand: the standard parser has no
    depth limit of its own.

    >>> nesting_depth(b'{"a": "[[[[", "b": [[1]]}', stop_above=10)
    3
    """
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_above:
                    return deepest
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> Any:
    raise MessageError("invalid_json", f"{name} is not a JSON number")


def _check_strings(value: Any) -> None:
    """Raise on the first string (key or value) that holds a lone surrogate."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise MessageError(
                    "invalid_unicode",
                    f"a string holds a lone surrogate U+{ord(node[exc.start]):04X} "
                    f"at character {exc.start}",
                ) from exc
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def parse_json(raw: bytes, *, max_bytes: int, max_depth: int) -> Any:
    """Parse one message's value under the limits above; any problem is a `MessageError`."""
    if not raw:
        raise MessageError("empty_value", "the message value is empty")
    if len(raw) > max_bytes:
        raise MessageError("value_too_large", f"the value has {len(raw)} bytes (max {max_bytes})")
    # a value with no more brackets than the limit cannot nest deeper: skip the scan
    many_brackets = raw.count(b"[") + raw.count(b"{") > max_depth
    if many_brackets and nesting_depth(raw, stop_above=max_depth) > max_depth:
        raise MessageError("too_deeply_nested", f"nesting deeper than {max_depth} levels")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageError("invalid_utf8", f"byte {exc.start} is not UTF-8") from exc
    try:
        doc = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise MessageError(
            "invalid_json", f"{exc.msg} at line {exc.lineno} col {exc.colno}"
        ) from exc
    except RecursionError as exc:  # a last line: the scan above should have caught it
        raise MessageError("too_deeply_nested", "nesting too deep to parse") from exc
    except ValueError as exc:  # an integer of more digits than Python will convert (4,300)
        raise MessageError("invalid_json", f"a number too long to read: {exc}") from exc
    if _SURROGATE_ESCAPE.search(raw):
        _check_strings(doc)
    return doc
