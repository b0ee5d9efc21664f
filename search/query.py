"""What a query means: its searchable terms, its text for the embedder, and its filters.

Terms are lower-cased words of two or more letters or digits, English stopwords removed, reduced
by a light suffix stemmer so that "pours", "poured" and "pouring" meet. The same ``tokenize``
turns indexed text into terms (``search.text_index``), so query and index always agree.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

# Queries are cut to this many characters, then to this many distinct terms.
MAX_QUERY_CHARS = 2_000
MAX_QUERY_TERMS = 32
# The English stopwords of bm25s (which ranked search before the derived index), kept verbatim.
STOPWORDS = frozenset(("a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
                       "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
                       "they", "this", "to", "was", "will", "with"))
_WORD = re.compile(r"(?u)\b\w\w+\b")
_VOWELS = set("aeiouy")
_KEEP_DOUBLE = set("lsz")


class SearchQueryError(ValueError):
    """A search that cannot run: an unusable query, limit or filter, or an index with nothing to search."""


class EmptyIndexError(SearchQueryError):
    """The index has no searchable segments."""


def stem(word: str) -> str:
    """A light English suffix stemmer: plurals, -ing, -ed, a final -e, consonant + y.

    Conservative on purpose (stems stay three letters or longer): it only has to bring the
    inflections of one verb or noun together, not to find linguistic roots.
    """
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("sses"):
        word = word[:-2]
    elif word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if len(word) == 5 and word.endswith("ying"):  # tying, dying, lying
        return word[:-4] + "ie"
    for suffix in ("ing", "ed"):
        base = word[: -len(suffix)]
        if word.endswith(suffix) and len(base) >= 3 and _VOWELS & set(base):
            word = base
            if len(word) >= 4 and word[-1] == word[-2] and word[-1] not in _VOWELS | _KEEP_DOUBLE:
                word = word[:-1]
            break
    if word.endswith("e") and len(word) >= 4:
        word = word[:-1]
    if word.endswith("y") and len(word) >= 4 and word[-2] not in _VOWELS:
        word = word[:-1] + "i"
    return word


_STEMS: dict[str, str] = {}


def tokenize(text: str | None) -> list[str]:
    """The terms of ``text`` in order (repeats kept): lower-cased, stopwords dropped, stemmed."""
    terms = []
    for word in _WORD.findall((text or "").lower()):
        if word in STOPWORDS:
            continue
        stemmed = _STEMS.get(word)
        if stemmed is None:
            stemmed = _STEMS[word] = stem(word)
        terms.append(stemmed)
    return terms


def clean_query_text(query: str) -> str:
    """The query as valid Unicode: bytes that were not UTF-8 become U+FFFD, so no encoder downstream fails.

    A command-line argument that is not valid UTF-8 reaches Python as lone surrogates
    (``surrogateescape``); a JSON or URL query may hold lone surrogates too. The tokenizer of the
    query embedder and every UTF-8 writer reject them, so each such byte is replaced instead.
    """
    try:
        return query.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a lone surrogate outside the escaped-byte range
        return query.encode("utf-8", "replace").decode("utf-8")


def query_terms(query: str) -> list[str]:
    """The distinct searchable terms of a query, in order, at most ``MAX_QUERY_TERMS``.

    Raises ``SearchQueryError`` for an empty query or one with no searchable words.
    """
    if not isinstance(query, str) or not query.strip():
        raise SearchQueryError("the search query is empty; give some words, e.g. \"person pours water\"")
    terms = list(dict.fromkeys(tokenize(query[:MAX_QUERY_CHARS])))
    if not terms:
        raise SearchQueryError(f"the search query {query[:80]!r} has no searchable words (stopwords, "
                               "punctuation and one-letter words are ignored)")
    return terms[:MAX_QUERY_TERMS]


def semantic_query_text(query: str) -> str:
    """The query as the embedding model sees it: one line, at most ``MAX_QUERY_CHARS`` characters."""
    return re.sub(r"\s+", " ", query[:MAX_QUERY_CHARS]).strip()


@dataclass(frozen=True)
class SearchFilters:
    """Which units may be hits: a uri glob, a task, a time range (units overlapping it)."""

    video: str | None = None
    task: str | None = None
    start_s: float | None = None
    end_s: float | None = None

    def validate(self) -> None:
        """Raise ``SearchQueryError`` for an impossible time range."""
        for name, value in (("--from", self.start_s), ("--to", self.end_s)):
            if value is not None and (not math.isfinite(value) or value < 0):
                raise SearchQueryError(f"{name} must be a number of seconds >= 0, not {value}")
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise SearchQueryError(f"--to ({self.end_s}) must be after --from ({self.start_s})")

    @property
    def active(self) -> bool:
        """Whether any filter is set."""
        return any(v is not None for v in (self.video, self.task, self.start_s, self.end_s))

    @property
    def columns(self) -> list[str]:
        """The unit columns the filters read."""
        wanted = []
        if self.video is not None:
            wanted.append("uri")
        if self.task is not None:
            wanted.append("task")
        if self.start_s is not None:
            wanted.append("end_s")
        if self.end_s is not None:
            wanted.append("start_s")
        return wanted

    def uri_matches(self, uris: Sequence[str]) -> np.ndarray:
        """Which of ``uris`` the glob matches, on the whole uri or its file name (``*kitchen*``)."""
        assert self.video is not None
        return np.array([fnmatch.fnmatchcase(u, self.video) or fnmatch.fnmatchcase(u.rsplit("/", 1)[-1], self.video)
                         for u in uris], dtype=bool)

    def time_overlaps(self, start_s: np.ndarray | None, end_s: np.ndarray | None) -> np.ndarray | bool:
        """Which spans overlap the time range: ending after ``--from`` and starting before ``--to``.

        Only the column a bound needs is read: ``end_s`` for ``--from``, ``start_s`` for ``--to``
        (the other may be None). True where no bound is set.
        """
        keep: np.ndarray | bool = True
        if self.start_s is not None:
            assert end_s is not None
            keep = np.asarray(end_s) > self.start_s
        if self.end_s is not None:
            assert start_s is not None
            keep = keep & (np.asarray(start_s) < self.end_s)
        return keep

    def table_mask(self, table: pa.Table) -> np.ndarray:
        """Which rows of ``table`` (with ``uri``, ``task``, ``start_s``, ``end_s``) pass every filter.

        The row-table form of the rule the search engine applies to its units; ``plm-index export``
        selects index rows with it, so a filter means the same in both commands.
        """
        keep = np.ones(table.num_rows, dtype=bool)
        if self.video is not None:
            keep &= self.uri_matches(table.column("uri").to_pylist())
        if self.task is not None:
            keep &= np.asarray(table.column("task").to_pylist(), dtype=object) == self.task
        starts = table.column("start_s").to_numpy() if self.end_s is not None else None
        ends = table.column("end_s").to_numpy() if self.start_s is not None else None
        return keep & self.time_overlaps(starts, ends)
