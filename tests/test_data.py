import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from semid.config import DataConfig
from semid.data import (
    DataError,
    RELEASES,
    file_digest,
    locate_raw,
    prepare_movielens,
    read_release,
    split_title_year,
    write_prepared,
)

from conftest import ML_LATEST_SMALL, SHARED_MOVIELENS


def test_real_ml_latest_small_counts(ml_small_raw):
    assert ml_small_raw.movies["item_id"].nunique() == 9742
    assert ml_small_raw.ratings["user_id"].nunique() == 610
    assert len(ml_small_raw.ratings) == 100836
    assert len(ml_small_raw.tags) == 3683


def test_prepared_split_is_chronological_without_leaks(ml_small_raw):
    prepared = prepare_movielens(ml_small_raw, DataConfig(), seed=0)
    inter = prepared.interactions
    assert prepared.stats["users"] == 610 and prepared.stats["interactions"] == 100836
    assert len(prepared.items) == 9742
    # exactly one test and one valid item per user, and test is the chronologically last
    counts = inter.groupby(["user_id", "split"]).size().unstack(fill_value=0)
    assert (counts["test"] == 1).all() and (counts["valid"] == 1).all()
    last = inter.groupby("user_id")["timestamp"].max()
    test = inter[inter["split"] == "test"].set_index("user_id")["timestamp"]
    assert (test == last.loc[test.index]).all()
    valid = inter[inter["split"] == "valid"].set_index("user_id")["timestamp"]
    assert (valid <= test.loc[valid.index]).all()
    train_max = inter[inter["split"] == "train"].groupby("user_id")["timestamp"].max()
    assert (train_max <= valid.loc[train_max.index]).all()
    # no item of a user's test interaction appears in that user's train history
    train_pairs = set(zip(inter.loc[inter.split == "train", "user_id"], inter.loc[inter.split == "train", "item_id"]))
    test_pairs = set(zip(inter.loc[inter.split == "test", "user_id"], inter.loc[inter.split == "test", "item_id"]))
    assert not train_pairs & test_pairs


def test_items_carry_title_year_genres_tags_and_text(ml_small_raw):
    items = prepare_movielens(ml_small_raw, DataConfig(), seed=0).items
    toy = items.set_index("item_id").loc[1]
    assert toy["title"] == "Toy Story" and toy["year"] == 1995
    assert "Animation" in toy["genres"] and "pixar" in toy["tags"]
    assert toy["item_text"].startswith("Toy Story (1995). Genres: Adventure, Animation")
    assert items["item_id"].is_monotonic_increasing


@pytest.mark.parametrize(
    "title, expected",
    [("Toy Story (1995)", ("Toy Story", 1995)), ("Babylon 5", ("Babylon 5", None)),
     ("Fawlty Towers (1975-1979)", ("Fawlty Towers", 1975)), ("  City of God (Cidade de Deus) (2002) ", ("City of God (Cidade de Deus)", 2002))],
)
def test_split_title_year(title, expected):
    assert split_title_year(title) == expected


def test_seeded_subsampling_is_deterministic_and_bounded(ml_small_raw):
    config = DataConfig(sample_users=100, sample_items=500)
    first = prepare_movielens(ml_small_raw, config, seed=7)
    again = prepare_movielens(ml_small_raw, config, seed=7)
    other = prepare_movielens(ml_small_raw, config, seed=8)
    pd.testing.assert_frame_equal(first.interactions, again.interactions)
    assert len(first.items) == 500 and first.stats["users"] <= 100
    assert set(first.interactions["item_id"]) <= set(first.items["item_id"])
    assert not first.interactions.equals(other.interactions)
    popular = prepare_movielens(ml_small_raw, DataConfig(sample_items=300, sample_items_strategy="popular"), seed=1)
    assert 356 in set(popular.items["item_id"])  # Forrest Gump, the most rated movie


def test_min_rating_and_min_interactions_filter(ml_small_raw):
    prepared = prepare_movielens(ml_small_raw, DataConfig(min_rating=4.0, min_user_interactions=20), seed=0)
    assert prepared.interactions["rating"].min() >= 4.0
    assert prepared.interactions.groupby("user_id").size().min() >= 20


def _write_ml1m(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "movies.dat").write_bytes("1::Toy Story (1995)::Animation|Children's|Comedy\n2::Jumanji (1995)::Adventure\n3::Amélie (2001)::Comedy|Romance\n".encode("latin-1"))
    rows = [f"{u}::{i}::{r}::{t}" for u, i, r, t in [(1, 1, 5, 10), (1, 2, 3, 20), (1, 3, 4, 30), (2, 3, 4, 5), (2, 1, 2, 6), (2, 2, 1, 7)]]
    (folder / "ratings.dat").write_text("\n".join(rows) + "\n")


def _write_ml100k(folder: Path) -> None:
    folder.mkdir(parents=True)
    flags_toy = ["0", "0", "0", "1", "1", "1"] + ["0"] * 13
    flags_golden = ["0", "1", "1"] + ["0"] * 13 + ["1", "0", "0"]
    (folder / "u.item").write_bytes(("\n".join([
        "|".join(["1", "Toy Story (1995)", "01-Jan-1995", "", "http://x", *flags_toy]),
        "|".join(["2", "GoldenEye (1995)", "01-Jan-1995", "", "http://x", *flags_golden]),
    ]) + "\n").encode("latin-1"))
    (folder / "u.data").write_text("1\t1\t5\t100\n1\t2\t3\t50\n2\t2\t4\t70\n1\t1\t4\t200\n")


def test_old_formats_parse(tmp_path):
    _write_ml1m(tmp_path / "ml-1m")
    raw = read_release("ml-1m", tmp_path / "ml-1m")
    assert list(raw.movies["title"]) == ["Toy Story (1995)", "Jumanji (1995)", "Amélie (2001)"]
    assert raw.movies.iloc[0]["genres"] == ["Animation", "Children's", "Comedy"]
    assert len(raw.ratings) == 6 and raw.ratings["rating"].dtype == "float32"

    _write_ml100k(tmp_path / "ml-100k")
    raw = read_release("ml-100k", tmp_path / "ml-100k")
    assert raw.movies.iloc[0]["genres"] == ["Animation", "Children's", "Comedy"]
    assert raw.movies.iloc[1]["genres"] == ["Action", "Adventure", "Thriller"]
    # user 1 rated item 1 twice: that is one interaction (the first), so user 1 keeps 2 and the
    # filter leaves nobody, which must be a clear error rather than empty outputs
    with pytest.raises(DataError, match="no user keeps data.min_user_interactions=3"):
        prepare_movielens(raw, DataConfig(min_user_interactions=3), seed=0)

    prepared = prepare_movielens(read_release("ml-1m", tmp_path / "ml-1m"), DataConfig(min_user_interactions=3), seed=0)
    test = prepared.interactions[prepared.interactions["split"] == "test"].set_index("user_id")["item_id"]
    assert test.to_dict() == {1: 3, 2: 2}
    assert prepared.items.set_index("item_id").loc[3, "year"] == 2001


def test_old_format_short_row_is_a_clear_error(tmp_path):
    _write_ml1m(tmp_path / "ml-1m")
    (tmp_path / "ml-1m" / "ratings.dat").write_text("1::1::5\n")
    with pytest.raises(DataError, match="ratings.dat line 1 has fewer than the 4 fields"):
        read_release("ml-1m", tmp_path / "ml-1m")


def test_unknown_release_lists_choices(tmp_path):
    with pytest.raises(DataError, match="unknown MovieLens release 'ml-2m'; choose one of: ml-latest-small"):
        locate_raw("ml-2m", tmp_path)


def test_missing_column_names_file_and_columns(tmp_path):
    folder = tmp_path / "ml-latest-small"
    shutil.copytree(ML_LATEST_SMALL, folder)
    movies = pd.read_csv(folder / "movies.csv").drop(columns=["genres"])
    movies.to_csv(folder / "movies.csv", index=False)
    with pytest.raises(DataError, match=r"movies.csv lacks column\(s\) genres; found movieId, title"):
        read_release("ml-latest-small", folder)


def test_checksum_mismatch_is_refused(tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(ML_LATEST_SMALL, mirror / "ml-latest-small")
    with open(mirror / "ml-latest-small" / "ratings.csv", "a") as handle:
        handle.write("1,1,5.0,1\r\n")
    with pytest.raises(DataError, match="checksum mismatch for .*ratings.csv: sha256 is"):
        locate_raw("ml-latest-small", tmp_path / "cache", mirror)


def test_mirror_folder_and_mirror_zip_are_verified_sources(tmp_path):
    folder, source = locate_raw("ml-latest-small", tmp_path / "cache", SHARED_MOVIELENS)
    assert folder == ML_LATEST_SMALL and "sha256 of each file" in source

    # a mirror holding the official-style zip: extracted into the cache, then verified per file
    mirror = tmp_path / "zips"
    mirror.mkdir()
    with zipfile.ZipFile(mirror / "ml-latest-small.zip", "w") as archive:
        for path in ML_LATEST_SMALL.iterdir():
            archive.write(path, f"ml-latest-small/{path.name}")
    # ml-latest-small has no official zip MD5 on record, so the zip itself is refused unverified
    with pytest.raises(DataError, match="no official MD5 known"):
        locate_raw("ml-latest-small", tmp_path / "cache2", mirror)
    folder, source = locate_raw("ml-latest-small", tmp_path / "cache3", mirror, verify=False)
    assert file_digest(folder / "ratings.csv") == RELEASES["ml-latest-small"].file_sha256["ratings.csv"]


def test_failed_write_leaves_no_half_written_output(ml_small_raw, tmp_path):
    prepared = prepare_movielens(ml_small_raw, DataConfig(sample_items=200, sample_items_strategy="popular"), seed=0)
    out = tmp_path / "prepared"
    write_prepared(prepared, out)
    before = sorted(p.name for p in out.iterdir())
    broken = type(prepared)(items=prepared.items.assign(genres=object()), interactions=prepared.interactions, stats={})
    with pytest.raises(Exception):
        write_prepared(broken, out)
    assert sorted(p.name for p in out.iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".prepared")]
