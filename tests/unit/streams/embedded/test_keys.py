"""The embedded mode's adapter keys: made once in the state folder and reused, so the trainer and
the workers of a fresh machine agree; keys set by hand are never replaced."""

from __future__ import annotations

from pathlib import Path

from adapters.registry.keys import read_signing_key, read_verify_key
from adapters.registry.signing import key_id
from streams.embedded.keys import with_embedded_keys
from streams.wire.settings import Settings


def _settings(state: Path, **adapters: str) -> Settings:
    return Settings.model_validate({"services": {"state_dir": str(state)}, "adapters": adapters})


def test_a_fresh_state_folder_gets_one_pair_that_later_runs_reuse(tmp_path: Path) -> None:
    first = with_embedded_keys(_settings(tmp_path))
    private, public = first.adapters.signing_key_file, first.adapters.verify_key_file
    assert private is not None and public is not None
    assert private.parent == tmp_path / "keys"
    assert key_id(read_signing_key(private).public_key()) == key_id(read_verify_key(public))
    again = with_embedded_keys(_settings(tmp_path))
    assert again.adapters == first.adapters
    assert key_id(read_verify_key(public)) == key_id(read_signing_key(private).public_key())


def test_keys_set_by_hand_are_kept_and_nothing_is_made(tmp_path: Path) -> None:
    mine = _settings(tmp_path, verify_key_file=str(tmp_path / "prod.pub"))
    assert with_embedded_keys(mine) == mine
    assert not (tmp_path / "keys").exists()
