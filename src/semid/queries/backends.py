"""The backend shape, and the registry that maps ``queries.backend`` to its class."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from semid.queries.errors import QueryGenerationError
from semid.queries.gemini import GeminiBackend
from semid.queries.openai_compatible import OpenAIBackend
from semid.queries.template import TemplateBackend

if TYPE_CHECKING:
    from semid.config import QueriesConfig


class QueryBackend(Protocol):
    name: str
    model: str
    remote: bool  # remote backends go through the cache, retries and the thread pool


BACKENDS: dict[str, type] = {"template": TemplateBackend, "gemini": GeminiBackend, "openai": OpenAIBackend}


def create_backend(config: QueriesConfig, seed: int, client: Any | None = None, environ: dict[str, str] | None = None):
    """The backend named by ``queries.backend``; a remote one checks its key here, before any request.

    ``client`` replaces the SDK client (tests pass a fake with the SDK's method surface).
    """
    if config.backend not in BACKENDS:
        raise QueryGenerationError(
            f"queries.backend={config.backend!r} is not valid; choose one of: {', '.join(BACKENDS)}"
        )
    cls = BACKENDS[config.backend]
    if cls is TemplateBackend:
        return TemplateBackend(config, seed)
    return cls(config, client=client, environ=environ)
