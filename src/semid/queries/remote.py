"""What the LLM backends share: the key from the environment, the SDK client made on first use,
one request per item answered by a :class:`Reply`."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from semid.queries.errors import QueryGenerationError

if TYPE_CHECKING:
    from semid.config import QueriesConfig


@dataclass
class Reply:
    """One remote answer: its text and the token usage the service reported (0 when unknown)."""

    text: str | None
    input_tokens: int = 0
    output_tokens: int = 0


class RemoteBackend:
    """Shared by the LLM backends: key from the environment, one request per item."""

    name = ""
    remote = True
    default_key_envs: tuple[str, ...] = ()

    def __init__(self, config: QueriesConfig, client: Any | None = None, environ: dict[str, str] | None = None):
        self.model = config.model
        self.config = config
        environ = os.environ if environ is None else environ
        key_envs = self.key_envs(config)
        self.key_source = next((e for e in key_envs if environ.get(e)), "")  # "": no key is sent
        self._key = environ[self.key_source] if self.key_source else None
        if key_envs and not self._key:
            hint = " (a local server needs none: leave queries.api_key_env empty)" if self.name == "openai" else ""
            raise QueryGenerationError(
                f"queries.backend={self.name!r} needs an API key in the environment: set "
                f"{' or '.join(key_envs)}{hint}, or use queries.backend=template offline"
            )
        self._client = client
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = self.make_client(self._key)
            return self._client

    def key_envs(self, config: QueriesConfig) -> tuple[str, ...]:
        """Environment variables the key may come from, first set wins; none: send no key."""
        return (config.api_key_env,) if config.api_key_env else self.default_key_envs

    def make_client(self, key: str | None) -> Any:  # pragma: no cover - needs the network to be useful
        raise NotImplementedError

    def request(self, prompt: str, n: int) -> Reply:
        raise NotImplementedError

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text
