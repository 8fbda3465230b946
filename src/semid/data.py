"""MovieLens: locate and verify a GroupLens release, parse it, and build items / interactions.

Raw files come from, in order: the ``data/raw/<release>/`` cache; a local mirror folder
(``data.mirror`` or the ``SEMID_MOVIELENS_MIRROR`` environment variable) holding
``<release>/`` or ``<release>.zip``; otherwise the official zip from GroupLens. Every source is
checksum-verified before use.

Outputs of :func:`prepare_movielens`:

- items: one row per movie, sorted by ``item_id`` (this order is the row order of every item
  embedding downstream), with title, year, genres, user tags (most frequent first), genome tags
  (where the release ships the genome) and the ``item_text`` that embedders read;
- interactions: one row per (user, item) rating kept, in chronological order per user, with a
  ``split`` column: each user's last interaction is ``test``, the one before ``valid``, the
  rest ``train``.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from semid.io import SemidError, atomic_dir, atomic_path, progress

if TYPE_CHECKING:
    from semid.config import DataConfig

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"
MIRROR_ENV = "SEMID_MOVIELENS_MIRROR"
VERIFIED_MARKER = ".semid-verified"

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)


class DataError(SemidError):
    """Raw data that is missing, malformed or fails its checksum."""


@dataclass(frozen=True)
class Release:
    name: str
    layout: str  # "csv" (ml-latest*, ml-25m, ml-32m), "ml-100k" or "ml-1m"
    files: tuple[str, ...]  # files the parser needs
    optional_files: tuple[str, ...] = ()
    # Official MD5 of the zip as GroupLens publishes it (<name>.zip.md5). None for releases
    # that GroupLens rebuilds in place (ml-latest) or where the .md5 is fetched at download.
    zip_md5: str | None = None
    # SHA-256 of extracted files, where we know them (lets a mirror of loose files verify).
    file_sha256: dict[str, str] = field(default_factory=dict)


_CSV = ("movies.csv", "ratings.csv")
_CSV_OPTIONAL = ("tags.csv", "genome-scores.csv", "genome-tags.csv")

RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        Release(
            "ml-latest-small", "csv", _CSV, _CSV_OPTIONAL,
            # ../shared/data/movielens/SOURCES.md (files as GroupLens ships them, CRLF endings)
            file_sha256={
                "movies.csv": "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
                "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
                "tags.csv": "92a9f8bb7916dceef6151209845788c3643f794dfa79d1feaec7121b5960399d",
                "links.csv": "97ad18e4e56a09363c65676b6cb3482ce3e2cea2372a24620c1599c843325f31",
            },
        ),
        Release("ml-latest", "csv", _CSV, _CSV_OPTIONAL),
        Release("ml-25m", "csv", _CSV, _CSV_OPTIONAL, zip_md5="6b51fb2759a8657d3bfcbfc42b592ada"),
        Release("ml-32m", "csv", _CSV, _CSV_OPTIONAL),
        Release("ml-100k", "ml-100k", ("u.data", "u.item"), ("u.genre",),
                zip_md5="0e33842e24a9c977be4e0107933c0723"),
        Release("ml-1m", "ml-1m", ("movies.dat", "ratings.dat"), (),
                zip_md5="c4d9eecfca2ab87c1945afe126590906"),
    )
}


def get_release(name: str) -> Release:
    if name not in RELEASES:
        raise DataError(f"unknown MovieLens release {name!r}; choose one of: {', '.join(RELEASES)}")
    return RELEASES[name]


# --------------------------------------------------------------------------- locating + checks


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(path: Path, expected: str, algorithm: str) -> None:
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        raise DataError(
            f"checksum mismatch for {path}: {algorithm} is {actual}, expected {expected}. "
            "The file is corrupt or not the official GroupLens release; delete it and rerun."
        )


def verify_folder(release: Release, folder: Path) -> str:
    """Verify extracted files; returns how. Raises DataError when they cannot be trusted."""
    missing = [f for f in release.files if not (folder / f).exists()]
    if missing:
        raise DataError(f"{folder} lacks {', '.join(missing)} needed for {release.name}")
    if release.file_sha256:
        for name, expected in release.file_sha256.items():
            if (folder / name).exists():
                _check(folder / name, expected, "sha256")
        return "sha256 of each file"
    checksums = folder / "checksums.txt"  # ml-32m ships "<md5>  <file>" lines
    if checksums.exists():
        for line in checksums.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and (folder / parts[1]).exists():
                _check(folder / parts[1], parts[0], "md5")
        return "md5 of each file (checksums.txt)"
    if (folder / VERIFIED_MARKER).exists():
        return (folder / VERIFIED_MARKER).read_text().strip()
    raise DataError(
        f"cannot verify the files in {folder}: no known per-file checksums for {release.name}. "
        f"Provide {release.name}.zip in the mirror (its MD5 is checked), or set "
        "data.verify_checksums=false to accept them unverified."
    )


def verify_zip(release: Release, zip_path: Path, expected_md5: str | None) -> str:
    expected = expected_md5 or release.zip_md5
    if not expected:
        raise DataError(
            f"no official MD5 known for {zip_path.name}; set data.verify_checksums=false to use it "
            "unverified"
        )
    _check(zip_path, expected, "md5")
    return f"md5 of {zip_path.name} ({expected})"


def extract_zip(release: Release, zip_path: Path, target: Path, how: str) -> Path:
    """Extract the release's files from its zip into ``target`` (atomically)."""
    with atomic_dir(target) as tmp, zipfile.ZipFile(zip_path) as archive:
        for member in archive.namelist():
            name = Path(member).name
            if member.endswith("/") or name not in (*release.files, *release.optional_files,
                                                     "README.txt", "checksums.txt", "links.csv"):
                continue
            with archive.open(member) as src, open(tmp / name, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
        (tmp / VERIFIED_MARKER).write_text(how + "\n")
    return target


def download(url: str, target: Path) -> Path:
    with atomic_path(target) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0)
                with progress(total=total or None, unit="B", unit_scale=True, desc=target.name) as bar:
                    while block := response.read(1 << 20):
                        out.write(block)
                        bar.update(len(block))
        except OSError as error:
            raise DataError(f"could not download {url}: {error}") from error
    return target


def _published_md5(release: Release) -> str | None:
    if release.zip_md5:
        return release.zip_md5
    url = GROUPLENS_URL.format(name=release.name) + ".md5"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode().split()
    except OSError as error:
        raise DataError(f"could not fetch the published checksum {url}: {error}") from error
    return text[0] if text else None


def locate_raw(
    release_name: str, cache_dir: Path, mirror: str | Path | None = None, verify: bool = True
) -> tuple[Path, str]:
    """Return (folder with the extracted files, where they came from and how they were checked)."""
    release = get_release(release_name)
    cached = Path(cache_dir) / release.name
    mirror = mirror or os.environ.get(MIRROR_ENV) or None

    def accept(folder: Path, source: str) -> tuple[Path, str]:
        how = verify_folder(release, folder) if verify else "not verified (data.verify_checksums=false)"
        return folder, f"{source}; {how}"

    if cached.is_dir():
        return accept(cached, f"cache {cached}")
    if mirror:
        mirror = Path(mirror)
        if not mirror.is_dir():
            raise DataError(f"mirror folder {mirror} does not exist")
        if (mirror / release.name).is_dir():
            return accept(mirror / release.name, f"mirror {mirror / release.name}")
        zip_path = mirror / f"{release.name}.zip"
        if zip_path.exists():
            how = verify_zip(release, zip_path, None) if verify else "not verified"
            return extract_zip(release, zip_path, cached, how), f"mirror {zip_path}; {how}"
    zip_path = Path(cache_dir) / f"{release.name}.zip"
    if not zip_path.exists():
        download(GROUPLENS_URL.format(name=release.name), zip_path)
    how = verify_zip(release, zip_path, _published_md5(release)) if verify else "not verified"
    extract_zip(release, zip_path, cached, how)
    zip_path.unlink()
    return cached, f"GroupLens download; {how}"


# --------------------------------------------------------------------------------- parsing


@dataclass
class RawMovieLens:
    movies: pd.DataFrame  # item_id, title (with year), genres (list[str])
    ratings: pd.DataFrame  # user_id, item_id, rating, timestamp
    tags: pd.DataFrame | None = None  # user_id, item_id, tag, timestamp
    genome: pd.DataFrame | None = None  # item_id, tag, relevance


def _read_csv(path: Path, required: tuple[str, ...], **kwargs) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        raise DataError(f"cannot parse {path}: {' '.join(str(error).split())}") from error
    _require_columns(frame, path, required)
    return frame


def _require_columns(frame: pd.DataFrame, path: Path, required: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path} lacks column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns))}"
        )


def numeric_column(frame: pd.DataFrame, column: str, path: Path, dtype: str) -> pd.Series:
    """``frame[column]`` as ``dtype``, or a DataError naming the file, the first bad row (counted
    from 1, after any header) and its value."""
    parsed = pd.to_numeric(frame[column], errors="coerce")
    bad = parsed.isna().to_numpy()
    integer = np.dtype(dtype).kind in "iu"
    if integer:  # "1.5" is a number but no id
        bad = bad | (parsed.to_numpy(dtype="float64", na_value=np.nan) % 1 != 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path} row {row + 1}: {column}={frame[column].iloc[row]!r} is not "
            f"{'an integer' if integer else 'a number'} ({int(bad.sum()):,} such row(s))"
        )
    return parsed.astype(dtype)


def _numeric_columns(frame: pd.DataFrame, path: Path, dtypes: dict[str, str]) -> pd.DataFrame:
    return frame.assign(**{column: numeric_column(frame, column, path, dtype) for column, dtype in dtypes.items()})


RATING_DTYPES = {"userId": "int64", "movieId": "int64", "rating": "float32", "timestamp": "int64"}


def _read_ratings_csv(path: Path) -> pd.DataFrame:
    """ratings.csv typed as it is read (ml-25m: 25M rows); a cell that is no number is named."""
    try:
        ratings = pd.read_csv(path, dtype=RATING_DTYPES)
    except ValueError:  # parse errors too: the slow path below reports them
        ratings = _read_csv(path, tuple(RATING_DTYPES), dtype=str, keep_default_na=False)
        return _numeric_columns(ratings, path, RATING_DTYPES)
    _require_columns(ratings, path, tuple(RATING_DTYPES))
    missing = np.flatnonzero(ratings["rating"].isna().to_numpy())  # empty or "NA" cells
    if len(missing):
        raise DataError(f"{path} row {missing[0] + 1}: rating is empty; ratings are numbers ({len(missing):,} such row(s))")
    return ratings


def _split_genres(column: pd.Series) -> pd.Series:
    return column.fillna("").map(
        lambda s: [g for g in s.split("|") if g and g != "(no genres listed)"]
    )


def read_csv_release(folder: Path) -> RawMovieLens:
    # Titles as written: pandas would read a title "NA" or "null" as a missing value, then "nan".
    movies_path = folder / "movies.csv"
    movies = _read_csv(movies_path, ("movieId", "title", "genres"), dtype=str, keep_default_na=False)
    ratings = _read_ratings_csv(folder / "ratings.csv")
    movies = pd.DataFrame(
        {"item_id": numeric_column(movies, "movieId", movies_path, "int64"), "title": movies["title"],
         "genres": _split_genres(movies["genres"])}
    )
    ratings = ratings.rename(columns={"userId": "user_id", "movieId": "item_id"})
    tags = genome = None
    if (folder / "tags.csv").exists():
        # Empty and "NA" tags read as missing values; aggregate_tags drops them.
        tags = _read_csv(folder / "tags.csv", ("userId", "movieId", "tag", "timestamp"))
        tags = tags.assign(movieId=numeric_column(tags, "movieId", folder / "tags.csv", "int64"))
        tags = tags.rename(columns={"userId": "user_id", "movieId": "item_id"})
    if (folder / "genome-scores.csv").exists() and (folder / "genome-tags.csv").exists():
        scores = _read_csv(folder / "genome-scores.csv", ("movieId", "tagId", "relevance"))
        names = _read_csv(folder / "genome-tags.csv", ("tagId", "tag"))
        genome = scores.merge(names, on="tagId").rename(columns={"movieId": "item_id"})
        genome = genome[["item_id", "tag", "relevance"]]
    return RawMovieLens(movies, ratings, tags, genome)


def _read_delimited(path: Path, sep: str, names: list[str]) -> pd.DataFrame:
    # The old releases are Latin-1 with fixed column counts; a short row is malformed input.
    text = path.read_bytes().decode("latin-1")
    rows = [line.split(sep) for line in text.splitlines() if line.strip()]
    bad = [i for i, row in enumerate(rows, 1) if len(row) < len(names)]
    if bad:
        raise DataError(f"{path} line {bad[0]} has fewer than the {len(names)} fields {names}")
    return pd.DataFrame([row[: len(names)] for row in rows], columns=names)


OLD_RATING_DTYPES = {"user_id": "int64", "item_id": "int64", "rating": "float32", "timestamp": "int64"}


def read_ml1m(folder: Path) -> RawMovieLens:
    movies = _read_delimited(folder / "movies.dat", "::", ["item_id", "title", "genres"])
    ratings = _read_delimited(folder / "ratings.dat", "::", list(OLD_RATING_DTYPES))
    movies = _numeric_columns(movies, folder / "movies.dat", {"item_id": "int64"})
    movies = movies.assign(genres=_split_genres(movies["genres"]))
    ratings = _numeric_columns(ratings, folder / "ratings.dat", OLD_RATING_DTYPES)
    return RawMovieLens(movies, ratings)


def read_ml100k(folder: Path) -> RawMovieLens:
    genre_names = list(ML100K_GENRES)
    if (folder / "u.genre").exists():
        pairs = [line.split("|") for line in (folder / "u.genre").read_text("latin-1").splitlines() if "|" in line]
        genre_names = [name for name, _ in sorted(pairs, key=lambda p: int(p[1]))]
    columns = ["item_id", "title", "release_date", "video_release_date", "url", *genre_names]
    items = _read_delimited(folder / "u.item", "|", columns)
    items = _numeric_columns(items, folder / "u.item", dict.fromkeys(["item_id", *genre_names], "int64"))
    flags = items[genre_names].to_numpy()
    genres = [[g for g, on in zip(genre_names, row) if on and g != "unknown"] for row in flags]
    movies = pd.DataFrame({"item_id": items["item_id"], "title": items["title"], "genres": genres})
    ratings = _read_delimited(folder / "u.data", "\t", list(OLD_RATING_DTYPES))
    ratings = _numeric_columns(ratings, folder / "u.data", OLD_RATING_DTYPES)
    return RawMovieLens(movies, ratings)


READERS = {"csv": read_csv_release, "ml-100k": read_ml100k, "ml-1m": read_ml1m}


def read_release(release_name: str, folder: Path) -> RawMovieLens:
    return READERS[get_release(release_name).layout](Path(folder))


# ------------------------------------------------------------------------------ building

_YEAR_AT_END = re.compile(r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")


def split_title_year(title: str) -> tuple[str, int | None]:
    """'Toy Story (1995)' -> ('Toy Story', 1995); MovieLens titles mostly end in '(year)'."""
    title = title.strip()
    match = _YEAR_AT_END.search(title)
    if not match:
        return title, None
    return title[: match.start()].strip(), int(match.group(1))


def aggregate_tags(tags: pd.DataFrame | None, max_tags: int) -> dict[int, list[str]]:
    """Per item, distinct user tags (lower-cased), most frequently applied first."""
    if tags is None or tags.empty or max_tags == 0:
        return {}
    tags = tags.dropna(subset=["tag"])  # an empty or "NA" cell is no tag (astype(str) would make it "nan")
    frame = tags.assign(tag=tags["tag"].astype(str).str.strip().str.lower())
    frame = frame[frame["tag"] != ""]
    counts = frame.groupby(["item_id", "tag"]).size().rename("n").reset_index()
    counts = counts.sort_values(["item_id", "n", "tag"], ascending=[True, False, True])
    top = counts.groupby("item_id").head(max_tags)
    return top.groupby("item_id")["tag"].apply(list).to_dict()


def aggregate_genome(genome: pd.DataFrame | None, top_k: int, min_relevance: float) -> dict[int, list[str]]:
    if genome is None or genome.empty or top_k == 0:
        return {}
    frame = genome[(genome["relevance"] >= min_relevance) & genome["tag"].notna()]
    frame = frame.sort_values(["item_id", "relevance", "tag"], ascending=[True, False, True])
    return frame.groupby("item_id").head(top_k).groupby("item_id")["tag"].apply(list).to_dict()


def item_text(title: str, year: int | None, genres: list[str], tags: list[str], genome_tags: list[str]) -> str:
    """The text an embedder reads for an item: title, year, genres, tags, genome tags."""
    parts = [f"{title} ({year})." if year else f"{title}."]
    if genres:
        parts.append(f"Genres: {', '.join(genres)}.")
    if tags:
        parts.append(f"Tags: {', '.join(tags)}.")
    if genome_tags:
        parts.append(f"Themes: {', '.join(genome_tags)}.")
    return " ".join(parts)


def build_items(raw: RawMovieLens, config: DataConfig, keep: set[int] | None = None) -> pd.DataFrame:
    movies = raw.movies if keep is None else raw.movies[raw.movies["item_id"].isin(keep)]
    movies = movies.drop_duplicates("item_id").sort_values("item_id").reset_index(drop=True)
    user_tags = aggregate_tags(raw.tags, config.max_tags)
    genome_tags = aggregate_genome(raw.genome, config.genome_top_k, config.genome_min_relevance)
    rows = []
    for item_id, full_title, genres in zip(movies["item_id"], movies["title"], movies["genres"]):
        title, year = split_title_year(str(full_title))
        tags, genome = user_tags.get(item_id, []), genome_tags.get(item_id, [])
        rows.append((item_id, title, year, list(genres), tags, genome, item_text(title, year, genres, tags, genome)))
    items = pd.DataFrame(rows, columns=["item_id", "title", "year", "genres", "tags", "genome_tags", "item_text"])
    items["year"] = items["year"].astype("Int64")
    return items


def assign_split(interactions: pd.DataFrame) -> pd.DataFrame:
    """Chronological per user: last -> test, the one before -> valid, the rest -> train.

    Ties in timestamp are broken by item id, so the order (and the split) is deterministic.
    """
    ordered = interactions.sort_values(["user_id", "timestamp", "item_id"], kind="stable").reset_index(drop=True)
    from_end = ordered.groupby("user_id").cumcount(ascending=False)
    ordered["split"] = np.where(from_end == 0, "test", np.where(from_end == 1, "valid", "train"))
    ordered["position"] = ordered.groupby("user_id").cumcount().astype("int64")
    return ordered


@dataclass
class PreparedData:
    items: pd.DataFrame
    interactions: pd.DataFrame
    stats: dict[str, float | int | str]


def prepare_movielens(raw: RawMovieLens, config: DataConfig, seed: int) -> PreparedData:
    rng = np.random.default_rng(seed)
    ratings = raw.ratings
    stats: dict[str, float | int | str] = {
        "raw_items": int(raw.movies["item_id"].nunique()),
        "raw_users": int(ratings["user_id"].nunique()),
        "raw_interactions": int(len(ratings)),
    }
    interactions = ratings[ratings["rating"] >= config.min_rating]
    # One interaction per (user, item): a re-rating is the same consumption event; keep the first.
    interactions = interactions.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    interactions = interactions.drop_duplicates(["user_id", "item_id"], keep="first")

    if config.sample_users:
        users = np.sort(interactions["user_id"].unique())
        if config.sample_users < len(users):
            chosen = rng.choice(users, size=config.sample_users, replace=False)
            interactions = interactions[interactions["user_id"].isin(chosen)]
    keep_items: set[int] | None = None
    if config.sample_items:
        counts = interactions["item_id"].value_counts()
        if config.sample_items < len(counts):
            if config.sample_items_strategy == "popular":
                ranked = counts.rename("n").reset_index().sort_values(["n", "item_id"], ascending=[False, True])
                chosen_items = ranked["item_id"].to_numpy()[: config.sample_items]
            else:
                chosen_items = rng.choice(np.sort(counts.index.to_numpy()), size=config.sample_items, replace=False)
            keep_items = set(int(i) for i in chosen_items)
            interactions = interactions[interactions["item_id"].isin(keep_items)]

    per_user = interactions.groupby("user_id")["item_id"].transform("size")
    interactions = interactions[per_user >= config.min_user_interactions]
    if interactions.empty:
        raise DataError(
            f"no user keeps data.min_user_interactions={config.min_user_interactions} interactions "
            "after filtering and sampling; lower it or sample more items/users"
        )
    interactions = assign_split(interactions[["user_id", "item_id", "timestamp", "rating"]])
    # Without item sampling every movie stays in the catalogue (searchable even if unrated).
    items = build_items(raw, config, keep_items)
    unknown = set(interactions["item_id"].unique()) - set(items["item_id"])
    if unknown:
        raise DataError(f"{len(unknown)} rated item ids are missing from the movies file, e.g. {sorted(unknown)[:5]}")

    n_users = int(interactions["user_id"].nunique())
    n_rated = int(interactions["item_id"].nunique())
    split_sizes = interactions["split"].value_counts()
    stats.update(
        users=n_users,
        items=int(len(items)),
        items_with_interactions=n_rated,
        interactions=int(len(interactions)),
        density=float(len(interactions) / (n_users * n_rated)),
        train_interactions=int(split_sizes.get("train", 0)),
        valid_interactions=int(split_sizes.get("valid", 0)),
        test_interactions=int(split_sizes.get("test", 0)),
        items_with_tags=int((items["tags"].map(len) > 0).sum()),
        items_with_genome_tags=int((items["genome_tags"].map(len) > 0).sum()),
        mean_history_length=float(len(interactions) / n_users),
    )
    return PreparedData(items=items, interactions=interactions, stats=stats)


# --------------------------------------------------------------------------- artifacts

ITEMS_FILE = "items.parquet"
INTERACTIONS_FILE = "interactions.parquet"


def write_prepared(data: PreparedData, out_dir: Path) -> None:
    with atomic_dir(out_dir) as tmp:
        data.items.to_parquet(tmp / ITEMS_FILE, index=False)
        data.interactions.to_parquet(tmp / INTERACTIONS_FILE, index=False)


def read_parquet(path: str | Path) -> pd.DataFrame:
    """A parquet file, or one DataError line naming it when it is no readable parquet."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as error:
        raise DataError(f"cannot read {path} as parquet: {' '.join(str(error).split())}") from error


def load_items(prepared_dir: Path) -> pd.DataFrame:
    path = Path(prepared_dir) / ITEMS_FILE
    if not path.exists():
        raise DataError(f"{path} not found; run `dvc repro prepare_movielens` first")
    return read_parquet(path)


def load_interactions(prepared_dir: Path) -> pd.DataFrame:
    path = Path(prepared_dir) / INTERACTIONS_FILE
    if not path.exists():
        raise DataError(f"{path} not found; run `dvc repro prepare_movielens` first")
    return read_parquet(path)
