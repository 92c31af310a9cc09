"""The one root exception of borderline. Specific errors subclass it next to the code that raises
them (it lives in `models`, the bottom layer, so every package can import it)."""

from __future__ import annotations

__all__ = ["BorderlineError"]


class BorderlineError(Exception):
    """Base class of every error borderline raises on purpose. The CLI prints these as one line."""
