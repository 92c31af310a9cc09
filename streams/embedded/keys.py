"""The embedded mode's adapter keys: with no key files configured, a signing key pair is made once
in the services' state folder (``<state_dir>/keys``), so that on a fresh machine the trainer signs
and the workers verify, and the loop still closes. Production sets both files
(`borderline adapters keygen`, README: Security)."""

from __future__ import annotations

from adapters.registry.keys import ensure_key_pair
from streams.wire.settings import Settings

__all__ = ["KEYS_DIR", "with_embedded_keys"]

KEYS_DIR = "keys"


def with_embedded_keys(settings: Settings) -> Settings:
    """``settings`` with both adapter key files set: as configured, or the state folder's pair
    (made on first use). Either file set by hand means keys are managed: nothing is made."""
    keys = settings.adapters
    if keys.signing_key_file is not None or keys.verify_key_file is not None:
        return settings
    private, public = ensure_key_pair(settings.services.state_dir / KEYS_DIR)
    update = {"signing_key_file": private, "verify_key_file": public}
    return settings.model_copy(update={"adapters": keys.model_copy(update=update)})
