import pytest

from semid.models import ModelNotFound, installed_models, resolve_sentence_model


def test_packaged_minilm_resolves_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = resolve_sentence_model("all-MiniLM-L6-v2")
    assert folder.endswith("model") or "minilm" in folder.lower()
    assert resolve_sentence_model("sentence-transformers/all-MiniLM-L6-v2") == folder
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(folder, device="cpu")
    assert model.encode(["a space opera"]).shape == (1, 384)


def test_unknown_model_fails_offline_listing_what_is_installed(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="'no-such-model' is not installed.*installed: all-MiniLM-L6-v2"):
        resolve_sentence_model("no-such-model")
    assert "all-MiniLM-L6-v2" in installed_models()


def test_a_local_folder_is_taken_as_is(tmp_path):
    assert resolve_sentence_model(str(tmp_path)) == str(tmp_path)
