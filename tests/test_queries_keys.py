"""Where keys may go: OPENAI_API_KEY to OpenAI's own API over https only, another server's key
named in queries.api_key_env (or none), and no credentials in queries.base_url (params reach
dvc.lock and MLflow). The local server is a real HTTP endpoint; the SDK's own request code runs."""

from __future__ import annotations

import pytest
from fake_openai import openai_server  # noqa: F401 - a fixture
from test_queries import SECRET, items, remote_config  # noqa: F401 - items is a fixture

from semid.config import ConfigError, load_params
from semid.queries import QueryGenerationError, create_backend, generate_queries


def test_the_openai_key_is_never_sent_to_another_host(openai_server, items, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    config = remote_config("openai", base_url=openai_server.url)
    run = generate_queries(items.head(2), config, 42, create_backend(config, 42), tmp_path / "with-key-set")
    assert len(run.queries) == 2 and len(openai_server.authorizations) == 2
    assert not any(SECRET in authorization for authorization in openai_server.authorizations)

    monkeypatch.delenv("OPENAI_API_KEY")  # a local server needs no key at all
    run = generate_queries(items.head(2), config, 42, create_backend(config, 42), tmp_path / "no-key")
    assert len(run.queries) == 2

    named = remote_config("openai", base_url=openai_server.url, api_key_env="OPENAI_API_KEY")
    with pytest.raises(QueryGenerationError, match="queries.api_key_env=OPENAI_API_KEY.*api.openai.com"):
        create_backend(named, 42, environ={"OPENAI_API_KEY": SECRET})


@pytest.mark.parametrize("base_url", ["", "https://api.openai.com/v1", "https://API.OpenAI.com:443/v1"])
def test_the_openai_key_goes_to_openai_over_https_whatever_the_environment_says(base_url, openai_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url)  # the SDK would follow this for base_url=None
    backend = create_backend(remote_config("openai", base_url=base_url), 42, environ={"OPENAI_API_KEY": SECRET})
    assert backend.client.base_url.host == "api.openai.com" and backend.client.base_url.scheme == "https"
    assert backend.client.api_key == SECRET


@pytest.mark.parametrize(
    "base_url",
    ["http://api.openai.com/v1", "https://api.openai.com.evil.example/v1", "https://api.openai.com:8443/v1"],
)
def test_anything_but_openai_over_https_gets_no_openai_key(base_url):
    backend = create_backend(remote_config("openai", base_url=base_url), 42, environ={"OPENAI_API_KEY": SECRET})
    assert backend.client.api_key != SECRET and SECRET not in str(backend.client.default_headers)


@pytest.mark.parametrize(
    "base_url",
    [
        "https://me:hunter2@llm.example/v1", "https://llm.example/v1?key=hunter2",
        "http://localhost:8000/v1?api-key=hunter2", "https://h.example/v1?access_token=hunter2",
        "https://hunter2@llm.example/v1",
    ],
)
def test_credentials_in_base_url_are_refused_without_repeating_them(base_url):
    with pytest.raises(ConfigError, match="queries.base_url") as error:
        load_params(overrides={"queries.base_url": base_url})
    assert "hunter2" not in str(error.value) and "\n" not in str(error.value)


def test_a_plain_query_parameter_in_base_url_is_fine():
    params = load_params(overrides={"queries.base_url": "https://x.openai.azure.com/openai?api-version=2024-06-01"})
    assert params.queries.base_url.endswith("api-version=2024-06-01")
