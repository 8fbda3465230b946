"""Title matching: does a query name the movie?

A query *leaks the title* when the normalised title (lower case, accents and punctuation
removed, a leading article dropped; each alternative title in parentheses counts) occurs in it
as a whole-word phrase. Titles made only of stopwords ("It", "Up") are not checked: any query
would match. The template backend is stricter: it drops every candidate containing any *title
word*, i.e. any token of the title that is not in :data:`STOPWORDS` (English function words
plus a few foreign articles that MovieLens titles use).
"""

from __future__ import annotations

import re
import unicodedata

# English function words, plus articles of the other languages MovieLens titles use. A title
# word that is one of these does not stop a template query from using it.
STOPWORDS = frozenset(
    """a an the and or but nor of in on at to for from by with without about into onto over under
    up down out off as than then so too very not no is are was were be been being am do does did
    has have had will would can could shall should may might must it its it's this that these those
    i me my we us our you your he him his she her they them their who whom whose what which when
    where why how all any some each every both few more most other such own same just only also
    here there again once s t vs v part la le les el il lo der die das de du des et""".split()
)
_INVERTED_ARTICLE = re.compile(r"^(.*),\s*(the|a|an|la|le|les|l'|el|il|lo|der|die|das|den)$", re.IGNORECASE)
_PARENTHESISED = re.compile(r"\(([^()]*)\)")
# Not "die": "Die Hard" starts with a verb; dropping it would make "hard" the title.
_LEADING_ARTICLE = re.compile(r"^(the|a|an|la|le|les|l|el|il|lo|der|das|den) ")


def normalize(text: str) -> str:
    """Lower case, accents and punctuation removed, apostrophes joined: "Schindler's" -> "schindlers"."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    text = re.sub(r"['’`]", "", text)
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def title_variants(title: str) -> list[str]:
    """The title and its alternatives: 'City of Lost Children, The (Cité des enfants perdus, La)'."""
    alternatives = [a.strip() for a in _PARENTHESISED.findall(title)]
    main = _PARENTHESISED.sub(" ", title).strip()
    variants = []
    for variant in [main, *alternatives]:
        variant = re.sub(r"^a\.?k\.?a\.?\s+", "", variant, flags=re.IGNORECASE).strip()
        inverted = _INVERTED_ARTICLE.match(variant)
        if inverted:
            variant = f"{inverted.group(2)} {inverted.group(1)}"
        if variant:
            variants.append(variant)
    return variants


def title_phrases(title: str) -> list[str]:
    """Normalised title phrases to look for; titles of stopwords only are skipped (see module doc)."""
    phrases = []
    for variant in title_variants(title):
        phrase = _LEADING_ARTICLE.sub("", normalize(variant))
        if phrase and not set(phrase.split()) <= STOPWORDS:
            phrases.append(phrase)
    return phrases


def contains_title(query: str, title: str) -> bool:
    padded = f" {normalize(query)} "
    return any(f" {phrase} " in padded for phrase in title_phrases(title))


def title_words(title: str) -> set[str]:
    """Non-stopword tokens of every variant of the title."""
    return {w for variant in title_variants(title) for w in normalize(variant).split()} - STOPWORDS
