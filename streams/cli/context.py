"""What most commands need: settings that name a broker and Redis (external ones, or those of
`borderline services up`), and the corpus, fetched when missing."""

from __future__ import annotations

from pathlib import Path

from streams.wire.settings import Settings

__all__ = ["connected", "corpus_path"]


def connected(settings: Settings) -> Settings:
    """Settings that name a broker and Redis: external ones, or those of `services up`."""
    from streams.embedded.detached import running_endpoints
    from streams.embedded.services import ServiceError

    if not settings.embedded:
        return settings
    endpoints = running_endpoints(settings.services.state_dir)
    if endpoints is None:
        raise ServiceError(
            "no broker and Redis: run `borderline services up` first, or set "
            "BORDERLINE_KAFKA__BOOTSTRAP_SERVERS and BORDERLINE_REDIS__URL"
        )
    # embedded: the adapter keys of the state folder, unless set (streams.embedded.keys)
    from streams.embedded.keys import with_embedded_keys

    return with_embedded_keys(
        settings.with_services(endpoints.bootstrap_servers, endpoints.redis_url)
    )


def corpus_path(settings: Settings, path: Path | None) -> Path:
    if path is not None:
        return path
    from adapters.offline.corpus import fetch_spamassassin

    return fetch_spamassassin(settings.data_dir).path
