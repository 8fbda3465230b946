"""``queries.backend=openai``: any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama,
llama.cpp server) through the ``openai`` SDK. ``OPENAI_API_KEY`` is sent to OpenAI's own API only."""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Any

from semid.queries.errors import QueryGenerationError
from semid.queries.remote import RemoteBackend, Reply

if TYPE_CHECKING:
    from semid.config import QueriesConfig

# openai is imported in make_client, on first use: `import openai` takes ~0.6 s (python -X
# importtime, 2 shared cores), which every stage importing semid.queries would otherwise pay,
# the offline template backend included.


OPENAI_API_URL = "https://api.openai.com/v1"


def is_openai_api(base_url: str) -> bool:
    """OpenAI's own API over https ("" means it): the only place OPENAI_API_KEY may be sent."""
    if not base_url:
        return True
    parts = urllib.parse.urlsplit(base_url)
    try:
        port = parts.port
    except ValueError:  # not a number
        return False
    return (parts.scheme == "https" and parts.hostname == "api.openai.com" and port in (None, 443)
            and not parts.username)


class OpenAIBackend(RemoteBackend):
    """Any OpenAI-compatible chat endpoint; JSON schema output {"queries": [n strings]}."""

    name = "openai"
    default_key_envs = ("OPENAI_API_KEY",)

    def key_envs(self, config: QueriesConfig) -> tuple[str, ...]:
        """OPENAI_API_KEY goes to OpenAI only: params could point base_url anywhere, and it is a real
        key. Another server's key is named in queries.api_key_env; a local server may need none."""
        if is_openai_api(config.base_url):
            return super().key_envs(config)
        if config.api_key_env in self.default_key_envs:
            raise QueryGenerationError(
                f"queries.api_key_env={config.api_key_env} would send the OpenAI key to queries.base_url, which "
                f"is not OpenAI's API (https://api.openai.com); export that server's key under another name "
                f"and name it in queries.api_key_env"
            )
        return (config.api_key_env,) if config.api_key_env else ()

    def make_client(self, key: str | None) -> Any:
        import openai

        # Both given: left None, the SDK reads OPENAI_API_KEY and OPENAI_BASE_URL itself and could
        # send the one to the other. A server that needs no key gets a placeholder, as Ollama's docs do.
        # Our own loop retries (with the cache in mind); the SDK's would double the attempts.
        return openai.OpenAI(
            api_key=key or "no-key", base_url=self.config.base_url or OPENAI_API_URL, max_retries=0,
            timeout=self.config.timeout_seconds,
        )

    def request(self, prompt: str, n: int) -> Reply:
        schema = {
            "type": "object",
            "properties": {"queries": {"type": "array", "items": {"type": "string"}}},
            "required": ["queries"],
            "additionalProperties": False,
        }
        completion = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": prompt}],
            temperature=self.config.temperature,
            response_format={"type": "json_schema", "json_schema": {"name": "search_queries", "strict": True, "schema": schema}},
        )
        usage = getattr(completion, "usage", None)
        return Reply(
            text=completion.choices[0].message.content if completion.choices else None,
            input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )
