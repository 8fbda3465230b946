"""``queries.backend=template``, the offline default: queries assembled from genres, decade,
year, user tags and genome tags with paraphrase patterns, deterministic from the seed.

**A stand-in**: it knows nothing about a movie beyond its metadata, so these queries are easier
and narrower than an LLM's, and numbers measured on them are not comparable to the paper's. A
candidate containing any title word (:func:`semid.queries.titles.title_words`) is dropped.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import TYPE_CHECKING, Iterable

from semid.queries.errors import InvalidAnswer
from semid.queries.prompt import ItemInfo
from semid.queries.titles import normalize, title_words

if TYPE_CHECKING:
    from semid.config import QueriesConfig


# Surface forms: modifiers that read naturally before "movie"/"film".
GENRE_WORDS = {
    "Action": ("action",),
    "Adventure": ("adventure",),
    "Animation": ("animated", "cartoon"),
    "Children": ("kids", "family"),
    "Children's": ("kids", "family"),
    "Comedy": ("comedy", "funny"),
    "Crime": ("crime",),
    "Documentary": ("documentary",),
    "Drama": ("drama", "dramatic"),
    "Fantasy": ("fantasy",),
    "Film-Noir": ("film noir", "noir"),
    "Horror": ("horror", "scary"),
    "Musical": ("musical",),
    "Mystery": ("mystery",),
    "Romance": ("romance", "romantic"),
    "Sci-Fi": ("sci-fi", "science fiction"),
    "Thriller": ("thriller", "suspense"),
    "War": ("war",),
    "Western": ("western",),
}
GENRE_MOODS = {
    "Action": ("explosive", "fast-paced", "high-octane"),
    "Adventure": ("epic", "thrilling"),
    "Animation": ("colorful", "charming"),
    "Children": ("wholesome", "heartwarming"),
    "Children's": ("wholesome", "heartwarming"),
    "Comedy": ("lighthearted", "hilarious", "feel-good"),
    "Crime": ("gritty", "dark"),
    "Documentary": ("eye-opening", "informative"),
    "Drama": ("emotional", "moving", "serious"),
    "Fantasy": ("magical", "imaginative"),
    "Film-Noir": ("moody", "shadowy"),
    "Horror": ("creepy", "terrifying", "gory"),
    "Musical": ("toe-tapping", "upbeat"),
    "Mystery": ("puzzling", "twisty"),
    "Romance": ("sweet", "heartfelt"),
    "Sci-Fi": ("futuristic", "mind-bending"),
    "Thriller": ("tense", "suspenseful", "gripping"),
    "War": ("harrowing", "intense"),
    "Western": ("rugged", "dusty"),
}
DECADE_WORDS = {1920: "twenties", 1930: "thirties", 1940: "forties", 1950: "fifties", 1960: "sixties",
                1970: "seventies", 1980: "eighties", 1990: "nineties"}

# Pattern families by the slots they use. An original and its paraphrase use the same slot
# values through two different patterns of one family (and freshly drawn surface forms).
# Slots: {g}/{h} genre modifiers, {t}/{u} themes (tags), {d} decade, {y} year, {m} mood,
# {movie}/{movies} "movie" or "film".
PATTERN_FAMILIES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("g", "t"): ("{g} {movie} about {t}", "{g} {movie} with {t}", "{t} {g} {movie}", "a {g} {movie} involving {t}",
                 "{g} {movies} featuring {t}", "find me a {g} {movie} about {t}"),
    ("d", "g", "t"): ("{d} {g} {movie} about {t}", "{g} {movie} from the {d} with {t}",
                      "{t} in a {d} {g} {movie}", "{g} {movies} from the {d} featuring {t}"),
    ("t", "u"): ("{movie} with {t} and {u}", "{t} and {u} {movie}", "{movie} about {t}, {u}",
                 "{movies} featuring {u} and {t}"),
    ("d", "t"): ("{d} {movie} about {t}", "{movie} from the {d} with {t}", "{t} {movie} from the {d}"),
    ("t",): ("{movie} about {t}", "{t} {movie}", "{movies} featuring {t}", "{movie} with {t}"),
    ("d", "g"): ("{d} {g} {movie}", "{g} {movies} from the {d}", "{g} {movie} made in the {d}",
                 "a {g} {movie} from the {d}"),
    ("g", "m"): ("{m} {g} {movie}", "looking for a {m} {g} {movie}", "{g} {movie} that is {m}",
                 "something {m}: a {g} {movie}"),
    ("d", "g", "m"): ("{m} {d} {g} {movie}", "{g} {movie} from the {d} that is {m}",
                      "{m} {g} {movies} of the {d}"),
    ("g", "h"): ("{g} {h} {movie}", "{h} {g} {movie}", "a {movie} that is {g} and {h}", "{g} {movie} with {h} elements"),
    ("g", "y"): ("{g} {movie} released in {y}", "{y} {g} {movie}", "{g} {movie} that came out in {y}"),
    ("g",): ("{g} {movie}", "good {g} {movie}", "{g} {movie} to watch tonight", "a {g} {movie}"),
    ("d",): ("{movie} from the {d}", "{d} {movie}", "a {movie} made in the {d}"),
    ("y",): ("{movie} released in {y}", "{y} {movie}", "a {movie} that came out in {y}"),
}
_FAMILY_ORDER = list(PATTERN_FAMILIES)
# Tags made of these say nothing a genre slot does not already say ("sci-fi", "cult film").
_GENERIC_WORDS = frozenset({"movie", "movies", "film", "films"} | {
    w for words in GENRE_WORDS.values() for word in words for w in normalize(word).split()})


def _decade_forms(year: int) -> list[str]:
    decade = year // 10 * 10
    forms = [f"{decade}s"]
    if 1920 <= decade <= 1990:
        forms += [f"{decade % 100}s", DECADE_WORDS[decade]]
    return forms


class TemplateBackend:
    """Offline stand-in: queries from metadata and paraphrase patterns (see the module docstring)."""

    name = "template"
    model = "template-v1"
    remote = False

    def __init__(self, config: QueriesConfig, seed: int):
        self.config = config
        self.seed = seed

    def _slot_values(self, item: ItemInfo, forbidden: set[str]) -> dict[str, list[str]]:
        """Canonical slot values available for an item; themes with title words are left out."""

        def clean(values: Iterable[str]) -> list[str]:
            kept = []
            for value in values:
                words = normalize(value).split()
                if (0 < len(words) <= 4 and not set(words) & (forbidden | _GENERIC_WORDS)
                        and value.lower() not in kept):
                    kept.append(value.lower())
            return kept

        genres = [g for g in item.genres if g in GENRE_WORDS]
        values: dict[str, list[str]] = {
            "g": genres,
            "t": clean([*item.tags, *item.genome_tags])[:8],
            "d": [str(item.year // 10 * 10)] if item.year else [],
            "y": [str(item.year)] if item.year else [],
            "m": genres,  # a mood is drawn from a genre's moods
        }
        return values

    def generate(self, item: ItemInfo, n: int) -> tuple[list[str], Counter]:
        """n queries (originals, then paraphrases of the first n//2), or InvalidAnswer if too few.

        Returns the queries and counts of rejected candidates by reason.
        """
        rng = random.Random(f"{self.seed}:{item.item_id}")
        forbidden = title_words(item.title)
        slots = self._slot_values(item, forbidden)
        rejected: Counter = Counter()
        n_paraphrase = n // 2
        n_original = n - n_paraphrase

        combos = []  # (family, {slot: canonical value})
        for family in _FAMILY_ORDER:
            base = [s for s in family if s not in ("h", "u")]
            if any(not slots[s] for s in base):
                continue
            for _ in range(6):
                values = {s: rng.choice(slots[s]) for s in base}
                if "h" in family:
                    others = [g for g in slots["g"] if g != values["g"]]
                    if not others:
                        break
                    values["h"] = rng.choice(others)
                if "u" in family:
                    others = [t for t in slots["t"] if t != values["t"]]
                    if not others:
                        break
                    values["u"] = rng.choice(others)
                combos.append((family, values))
        # The most specific first: the item's own tags, then more slots; seeded order within.
        rng.shuffle(combos)
        combos.sort(key=lambda combo: ("t" not in combo[0], -len(combo[0])))

        seen: set[str] = set()
        originals: list[str] = []
        paraphrases: list[str] = []
        for family, values in combos:
            if len(originals) == n_original:
                break
            first, second = rng.sample(PATTERN_FAMILIES[family], 2)
            pair = []
            for pattern in (first, second):
                query = self._render(pattern, values, forbidden, rng)
                key = normalize(query)
                if set(key.split()) & forbidden:
                    rejected["rejected_title_word"] += 1
                elif key in seen or key in {normalize(q) for q in pair}:
                    rejected["rejected_duplicate"] += 1
                else:
                    pair.append(query)
                    continue
                break
            if len(pair) < 2 and len(originals) < n_paraphrase:
                continue  # an original that needs a paraphrase must come with one
            if not pair:
                continue
            originals.append(pair[0])
            seen.add(normalize(pair[0]))
            if len(originals) <= n_paraphrase:
                paraphrases.append(pair[1])
                seen.add(normalize(pair[1]))
        if len(originals) < n_original:
            raise InvalidAnswer("template_exhausted", f"only {len(originals)} of {n_original} original queries")
        return originals + paraphrases, rejected

    @staticmethod
    def _render(pattern: str, values: dict[str, str], forbidden: set[str], rng: random.Random) -> str:
        # "flick" only when the title itself says movie and film ("... Colon Movie Film for Theaters")
        nouns = [w for w in ("movie", "film") if w not in forbidden] or ["flick"]
        forms = {"movie": rng.choice(nouns), "movies": rng.choice(nouns) + "s"}
        for slot, value in values.items():
            if slot in ("g", "h"):
                forms[slot] = rng.choice(GENRE_WORDS[value])
            elif slot == "m":
                forms[slot] = rng.choice(GENRE_MOODS[value])
            elif slot == "d":
                forms[slot] = rng.choice(_decade_forms(int(value)))
            else:
                forms[slot] = value
        text = " ".join(pattern.format(**forms).split())
        return re.sub(r"\ba (?=[aeiou])", "an ", text)
