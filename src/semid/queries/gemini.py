"""``queries.backend=gemini``: Google Gemini through the ``google-genai`` SDK."""

from __future__ import annotations

from typing import Any

from semid.queries.remote import RemoteBackend, Reply

# google-genai is imported inside the methods, on first use: `import google.genai` takes ~0.55 s
# (python -X importtime, 2 shared cores), which every stage importing semid.queries would
# otherwise pay, the offline template backend included.


class GeminiBackend(RemoteBackend):
    """Google Gemini through ``google-genai``, structured output: a JSON array of n strings."""

    name = "gemini"
    default_key_envs = ("GEMINI_API_KEY", "GOOGLE_API_KEY")

    def make_client(self, key: str | None) -> Any:
        from google import genai
        from google.genai import types

        return genai.Client(api_key=key, http_options=types.HttpOptions(timeout=int(self.config.timeout_seconds * 1000)))

    def request(self, prompt: str, n: int) -> Reply:
        from google.genai import types

        schema = types.Schema(type="ARRAY", items=types.Schema(type="STRING"), min_items=n, max_items=n)
        response = self.client.models.generate_content(
            model=self.model,
            contents=prompt,
            config=types.GenerateContentConfig(
                temperature=self.config.temperature, response_mime_type="application/json", response_schema=schema
            ),
        )
        usage = getattr(response, "usage_metadata", None)
        return Reply(
            text=response.text,  # None when the answer was blocked: validated as empty
            input_tokens=int(getattr(usage, "prompt_token_count", 0) or 0),
            output_tokens=int(getattr(usage, "candidates_token_count", 0) or 0),
        )
