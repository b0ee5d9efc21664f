"""Keyword search over the segments of a Parquet index (``plm-index search``).

Segment text is ranked with BM25 from the ``bm25s`` library: lower-cased words of two or more
letters or digits, the library's English stopwords removed, and a light suffix stemmer so that
"pours", "poured" and "pouring" meet. The index is read fresh for each search; it is small
next to the videos it describes.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass

import bm25s
import numpy as np
import pyarrow as pa
from bm25s.tokenization import Tokenizer

from transforms import storage
from transforms.write.layout import read_index_table

# bm25s sets its own logger to DEBUG on import, so "Building index from tokens" would reach any
# handler on the root logger; its progress notes are not worth a line per search.
logging.getLogger("bm25s").setLevel(logging.WARNING)

# A logical segment row: the same clip, task and prompt under the same settings.
DEDUP_KEYS = ("video_id", "clip_index", "task", "prompt", "settings_hash")
# Queries are cut to this many characters, then to this many distinct terms.
MAX_QUERY_CHARS = 2_000
MAX_QUERY_TERMS = 32
TEXT_WIDTH = 60
URI_WIDTH = 40

_VOWELS = set("aeiouy")
_KEEP_DOUBLE = set("lsz")


class SearchQueryError(ValueError):
    """A search that cannot run: an unusable query or limit, or an index with nothing to search."""


class EmptyIndexError(SearchQueryError):
    """The index has no segments in any complete run."""


@dataclass(frozen=True)
class SearchHit:
    """One ranked segment: where it is in which video, its score and its text."""

    uri: str
    video_id: str
    clip_index: int
    start_s: float
    end_s: float
    score: float
    task: str
    text: str


def load_segments(index: str) -> pa.Table:
    """The segments table over all complete runs, each logical row once (the newest wins).

    Rows sharing ``DEDUP_KEYS`` (a clip indexed again by a later run with the same settings) are
    reduced to the one with the latest ``created_at`` (ties: the larger ``run_id``). The result
    is sorted by uri, clip index and task.
    """
    table = read_index_table(index, "segments")
    if table.num_rows == 0:
        return table
    order = [("created_at", "descending"), ("run_id", "descending")]
    newest_first = table.sort_by(order).append_column("__row", pa.array(np.arange(table.num_rows)))
    # Group-by keeps null keys (prompt, settings_hash may be null) as their own group.
    firsts = newest_first.group_by(list(DEDUP_KEYS), use_threads=False).aggregate([("__row", "min")])
    kept = newest_first.take(firsts["__row_min"]).drop_columns(["__row"])
    return kept.sort_by([("uri", "ascending"), ("clip_index", "ascending"), ("task", "ascending")])


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


def _tokenizer() -> Tokenizer:
    return Tokenizer(lower=True, stopwords="en", stemmer=stem)


def query_terms(query: str) -> list[str]:
    """The distinct searchable terms of a query, in order, at most ``MAX_QUERY_TERMS``.

    Raises ``SearchQueryError`` for an empty query or one with no searchable words.
    """
    if not query or not query.strip():
        raise SearchQueryError("the search query is empty; give some words, e.g. \"person pours water\"")
    tokens = _tokenizer().tokenize([query[:MAX_QUERY_CHARS]], update_vocab=True, return_as="string",
                                   show_progress=False)[0]
    # bm25s stands in "" for a text with no tokens; it must never match the empty documents.
    terms = list(dict.fromkeys(t for t in tokens if t))
    if not terms:
        raise SearchQueryError(f"the search query {query[:80]!r} has no searchable words (stopwords, "
                               "punctuation and one-letter words are ignored)")
    return terms[:MAX_QUERY_TERMS]


def keyword_search(table: pa.Table, query: str, limit: int = 10) -> list[SearchHit]:
    """The ``limit`` best segments for ``query`` by BM25 over their text, best first.

    Segments that share no term with the query (score 0) are not hits; equal scores keep the
    table's order. An empty table gives no hits.
    """
    if limit < 1:
        raise SearchQueryError(f"the result limit must be at least 1, not {limit}")
    terms = query_terms(query)
    if table.num_rows == 0:
        return []
    texts = [text or "" for text in table.column("text").to_pylist()]
    corpus = _tokenizer().tokenize(texts, update_vocab=True, return_as="string", show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=False)
    scores = retriever.get_scores(terms)
    matched = np.flatnonzero(scores > 0)
    best = matched[np.argsort(-scores[matched], kind="stable")][:limit]
    rows = table.take(pa.array(best, type=pa.int64())).to_pylist()
    return [SearchHit(uri=row["uri"], video_id=row["video_id"], clip_index=row["clip_index"],
                      start_s=row["start_s"], end_s=row["end_s"], score=float(scores[i]), task=row["task"],
                      text=row["text"] or "")
            for i, row in zip(best, rows, strict=True)]


def clock(seconds: float) -> str:
    """Seconds as ``m:ss`` (``h:mm:ss`` from an hour), rounded down to the second."""
    total = max(int(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def shorten(text: str, width: int, keep_end: bool = False) -> str:
    """Text on one line, cut to ``width`` characters with ``...`` (at the start if ``keep_end``)."""
    line = re.sub(r"\s+", " ", text).strip()
    if len(line) <= width:
        return line
    return "..." + line[-(width - 3):] if keep_end else line[: width - 3].rstrip() + "..."


def format_table(hits: list[SearchHit]) -> str:
    """A fixed-width terminal table of hits: rank, score, seconds, m:ss, uri and text."""
    header = ("#", "score", "start-end (s)", "time", "uri", "text")
    rows = [(str(rank), f"{hit.score:.3f}", f"{hit.start_s:.2f}-{hit.end_s:.2f}",
             f"{clock(hit.start_s)}-{clock(hit.end_s)}", shorten(hit.uri, URI_WIDTH, keep_end=True),
             shorten(hit.text, TEXT_WIDTH))
            for rank, hit in enumerate(hits, start=1)]
    widths = [max(len(row[col]) for row in [header, *rows]) for col in range(len(header))]
    right = {0, 1}  # numbers right-aligned

    def line(cells: tuple[str, ...]) -> str:
        parts = [cell.rjust(w) if col in right else cell.ljust(w)
                 for col, (cell, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(row) for row in rows)])


def hits_to_json(hits: list[SearchHit]) -> str:
    """Hits as a JSON array of objects with every ``SearchHit`` field."""
    return json.dumps([asdict(hit) for hit in hits], indent=1, ensure_ascii=False)


def run_search(index: str, query: str, limit: int = 10, as_json: bool = False) -> str:
    """Search the index at ``index`` and render the hits as a table or JSON.

    Raises ``FileNotFoundError`` if there is no index there, ``SearchQueryError`` for an unusable
    query and ``EmptyIndexError`` if no complete run holds any segment.
    """
    query_terms(query)  # a bad query is reported before the index is read
    if not storage.exists(index):
        raise FileNotFoundError(f"no index at {index}")
    table = load_segments(index)
    if table.num_rows == 0:
        raise EmptyIndexError(f"the index at {index} has no segments in any complete run "
                              "(no build has finished there, or it indexed no clips)")
    hits = keyword_search(table, query, limit)
    if as_json:
        return hits_to_json(hits)
    if not hits:
        return f"No segment matches {query!r} ({table.num_rows} segments searched)."
    return format_table(hits)
