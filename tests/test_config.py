from pathlib import Path

import pytest
import yaml

from semid.config import ConfigError, load_params

from conftest import REPO_ROOT


def test_params_yaml_loads_with_embedded_defaults():
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.base.profile == "embedded"
    assert params.data.release == "ml-latest-small"
    assert params.quantizer in ("rqkmeans", "rqvae", "rqvae_naive", "dictlearn", "rlfq")


@pytest.mark.parametrize(
    "override, fragment",
    [
        ({"data.release": "ml-99m"}, "data.release='ml-99m' is not valid; choose one of: ml-latest-small"),
        ({"data.min_user_interactions": 1}, "data.min_user_interactions=1 is out of range"),
        ({"data.sample_items": "many"}, "data.sample_items='many' must be an integer"),
        ({"data.sample_items_strategy": "best"}, "choose one of: random, popular"),
        ({"data.typo_key": 3}, "unknown key(s) data.typo_key; valid keys of data:"),
        ({"quantizer": "pq"}, "quantizer='pq' is not valid; choose one of: rqkmeans"),
        ({"embedding": "bert"}, "embedding='bert' is not valid"),
        ({"nonsense": {"a": 1}}, "unknown top-level key(s) nonsense"),
    ],
)
def test_bad_values_fail_at_load_naming_key_value_and_choices(override, fragment):
    with pytest.raises(ConfigError) as error:
        load_params(REPO_ROOT / "params.yaml", overrides=override)
    assert fragment in str(error.value)


def test_profile_overlay_wins_over_params_and_unknown_profile_lists_choices(tmp_path: Path):
    (tmp_path / "profiles").mkdir()
    base = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    (tmp_path / "profiles" / "paper.yaml").write_text(yaml.safe_dump({"data": {"release": "ml-25m"}}))
    base["base"]["profile"] = "paper"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(base))
    params = load_params(tmp_path / "params.yaml")
    assert params.data.release == "ml-25m"
    assert params.data.min_user_interactions == base["data"]["min_user_interactions"]  # untouched keys stay

    base["base"]["profile"] = "gpu-cluster"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(base))
    with pytest.raises(ConfigError, match="base.profile='gpu-cluster'.*choose one of: embedded, paper"):
        load_params(tmp_path / "params.yaml")


def test_paper_profile_file_is_valid():
    overrides = {"base.profile": "paper"}
    params = load_params(REPO_ROOT / "params.yaml", overrides=overrides)
    assert params.data.release == "ml-25m"


def test_sections_are_frozen():
    params = load_params(REPO_ROOT / "params.yaml")
    with pytest.raises(Exception):
        params.data.release = "ml-1m"
