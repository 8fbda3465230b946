"""The request for one item: what a backend may know about it, and the one prompt text."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pandas as pd


# The one prompt, faithful to the paper's description. Its rendered text is hashed into every
# cache key, so editing it (or the item's metadata) re-asks exactly the affected items.
PROMPT_TEMPLATE = """\
You are helping build a movie search engine. Write exactly {n} search queries that different \
people might type into a search box to find the movie below.

Rules:
- The queries must NOT contain the title of the movie.
- Describe the movie's content, themes and genre: plot elements, setting, characters, mood.
- Queries 1 to {n_original} are independent queries; queries {first_paraphrase} to {n} are \
paraphrases of queries 1 to {n_paraphrase}, in the same order (query {first_paraphrase} \
rephrases query 1, and so on).
- Keep each query short and natural, as people really search.
- Answer with JSON only: an array of exactly {n} distinct strings.

Movie: {title_year}
Genres: {genres}
Tags: {tags}"""


# Genre values that say the movie has none.
NO_GENRE = frozenset({"(no genres listed)", "unknown"})


@dataclass(frozen=True)
class ItemInfo:
    """What a backend may know about an item."""

    item_id: int
    title: str
    year: int | None
    genres: tuple[str, ...]
    tags: tuple[str, ...]
    genome_tags: tuple[str, ...]


def items_from_frame(items: pd.DataFrame) -> list[ItemInfo]:
    """ItemInfo per row of the prepared items table, in its order."""
    return [
        ItemInfo(
            item_id=int(row.item_id),
            title=str(row.title),
            year=None if pd.isna(row.year) else int(row.year),
            genres=tuple(g for g in row.genres if g not in NO_GENRE),
            tags=tuple(row.tags),
            genome_tags=tuple(row.genome_tags),
        )
        for row in items.itertuples(index=False)
    ]


def build_prompt(item: ItemInfo, n: int) -> str:
    """The request text for one item (the title is given so the model knows the movie)."""
    n_paraphrase = n // 2
    themes = list(dict.fromkeys([*item.tags, *item.genome_tags]))
    return PROMPT_TEMPLATE.format(
        n=n,
        n_original=n - n_paraphrase,
        n_paraphrase=n_paraphrase,
        first_paraphrase=n - n_paraphrase + 1,
        title_year=f"{item.title} ({item.year})" if item.year else item.title,
        genres=", ".join(item.genres) or "unknown",
        tags=", ".join(themes) or "none",
    )


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]
