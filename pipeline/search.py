"""Search the segments of a Parquet index (``plm-index search``): keyword, semantic or hybrid.

**Keyword.** Segment text is ranked with BM25 from the ``bm25s`` library: lower-cased words of two
or more letters or digits, the library's English stopwords removed, and a light suffix stemmer so
that "pours", "poured" and "pouring" meet. A segment that shares no term with the query is not a
keyword hit.

**Semantic.** Cosine similarity between the query's embedding and each segment's ``embedding``
(unit-norm float32 vectors written by the build, see ``transforms.embed``). The query is embedded
with the model the index records in its Parquet metadata (or ``embedding_model``); rows with no
embedding from that model (an index built before embeddings, or with another model) are embedded
from their text at query time. Up to ``ANN_MIN_ROWS`` rows the scan is exact (a matrix-vector
product); above it an IVF index from faiss proposes candidates that are re-scored exactly. That
index is stored next to the Parquet files under ``INDEX/_search/`` and rebuilt when the set of
complete runs changes.

**Hybrid (the default): cosine plus a bounded keyword-coverage boost.**
``score = cosine + HYBRID_KEYWORD_WEIGHT * coverage ** 2``, where ``coverage`` is the IDF-weighted
share of the query's terms (after stemming and stopwords) that the segment contains: 1 when it
holds every term, 0 when none. Cosine leads; a segment that holds all the query's words gains at
most ``HYBRID_KEYWORD_WEIGHT`` (0.1), one that holds half of them (by IDF) a quarter of that. A
query word that no segment contains still counts in the denominator, so paraphrases (whose words
the index lacks) are left to the embedding. Hybrid hits are segments with a cosine of at least
``SEMANTIC_FLOOR`` or at least one query term.

Why this fusion (measured on tests/pipeline/test_search_hybrid.py, 47 segments, 20 paraphrased
queries, all-MiniLM-L6-v2): keyword alone reached recall@1 0.50 / recall@5 0.85, semantic alone
0.95 / 1.00. Equal-weight reciprocal rank fusion (k=60 or k=10) fell to 0.80 / 1.00, and adding
max-normalised BM25 to the cosine fell to 0.90 (weight 0.05 and 0.1) down to 0.70 (weight 1.0):
a query word shared with a near-miss ("shoelaces" in "unties his shoelaces" for "kid tying his
shoelaces") outweighs a closer paraphrase, because max-normalising makes a one-word match look
like a full one. The coverage boost kept 0.95 / 1.00 for every weight tried (0.03 to 0.2, with
coverage, coverage squared or cubed, or an all-terms indicator), so it is never below the better
single mode there, and it still breaks near-ties by exact words.

Hits are filtered (uri glob, task, time range overlap, minimum score), and hits of the same video
and task that overlap, touch or lie within ``merge_gap_s`` of each other are merged into one
**moment** with the earliest start, the latest end and the best score. Output is a terminal table,
JSON, or a self-contained HTML page of result cards with thumbnails (``render_html``).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import html
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import pyarrow as pa
from bm25s.tokenization import Tokenizer

from core import storage
from schemas.tables import SEGMENTS_SCHEMA
from transforms.embed.embedding import (
    DEFAULT_MODEL_ID,
    embed_texts,
    load_embedding_model,
    model_dimension,
    row_text,
)

log = logging.getLogger(__name__)

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

MODES = ("keyword", "semantic", "hybrid")
DEFAULT_MODE = "hybrid"
HYBRID_KEYWORD_WEIGHT = 0.1
# Semantic (and hybrid) hits need at least this cosine (hybrid: or a query term in common).
SEMANTIC_FLOOR = 0.2
DEFAULT_MERGE_GAP_S = 1.0
# Hits gathered (per requested moment) before merging into moments.
POOL_PER_RESULT = 5
MIN_POOL = 50
# Exact cosine scan up to this many rows; above it an ANN index proposes candidates.
ANN_MIN_ROWS = 200_000
ANN_CANDIDATES = 200
# Rows without a usable embedding are embedded at query time only up to this many.
MAX_QUERY_TIME_EMBED = 20_000
CACHE_FOLDER = "_search"
CACHE_VERSION = "1"
THUMB_WIDTH = 320

_VOWELS = set("aeiouy")
_KEEP_DOUBLE = set("lsz")


class SearchQueryError(ValueError):
    """A search that cannot run: an unusable query, limit or filter, or an index with nothing to search."""


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


@dataclass(frozen=True)
class Moment:
    """Adjacent hits of one video and task merged: the span they cover, the best score, their texts."""

    uri: str
    video_id: str
    task: str
    start_s: float
    end_s: float
    score: float
    text: str
    hits: tuple[SearchHit, ...]

    @property
    def clip_indices(self) -> list[int]:
        """The clip indices of the merged hits, in time order."""
        return [hit.clip_index for hit in self.hits]


@dataclass(frozen=True)
class SearchFilters:
    """Which rows may be hits: a uri glob, a task, a time range (rows overlapping it)."""

    video: str | None = None
    task: str | None = None
    start_s: float | None = None
    end_s: float | None = None

    def validate(self) -> None:
        """Raise ``SearchQueryError`` for an impossible time range."""
        for name, value in (("--from", self.start_s), ("--to", self.end_s)):
            if value is not None and (not np.isfinite(value) or value < 0):
                raise SearchQueryError(f"{name} must be a number of seconds >= 0, not {value}")
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise SearchQueryError(f"--to ({self.end_s}) must be after --from ({self.start_s})")

    @property
    def active(self) -> bool:
        """Whether any filter is set."""
        return any(v is not None for v in (self.video, self.task, self.start_s, self.end_s))

    def mask(self, table: pa.Table) -> np.ndarray:
        """A boolean mask of the table's rows that pass every filter.

        ``video`` matches the whole uri or its file name (``*kitchen*``, ``gs://b/cam1/*.mp4``);
        the time range keeps rows that overlap ``[start_s, end_s]``.
        """
        keep = np.ones(table.num_rows, dtype=bool)
        if self.video is not None:
            uris = table.column("uri").to_pylist()
            keep &= np.array([fnmatch.fnmatchcase(u, self.video)
                              or fnmatch.fnmatchcase(u.rsplit("/", 1)[-1], self.video) for u in uris], dtype=bool)
        if self.task is not None:
            keep &= np.array([t == self.task for t in table.column("task").to_pylist()], dtype=bool)
        if self.start_s is not None:
            keep &= table.column("end_s").to_numpy(zero_copy_only=False) > self.start_s
        if self.end_s is not None:
            keep &= table.column("start_s").to_numpy(zero_copy_only=False) < self.end_s
        return keep


# ---------------------------------------------------------------------------------------------
# Reading the index


@dataclass
class LoadedIndex:
    """The deduplicated segments of an index and their embeddings.

    ``embeddings`` rows are unit vectors from ``model_name`` where ``has_embedding`` is true and
    zeros elsewhere; ``fingerprint`` names the set of complete runs and files that were read.
    """

    location: str
    table: pa.Table
    embeddings: np.ndarray | None
    has_embedding: np.ndarray
    model_name: str | None
    fingerprint: str


def _base_schema() -> pa.Schema:
    """The segments schema without the embedding column (whose size varies with the model)."""
    return pa.schema([f for f in SEGMENTS_SCHEMA if f.name != "embedding"])


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table's columns in ``schema``'s order and types; absent columns are nulls."""
    arrays = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
              for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _embedding_matrix(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray] | None:
    """An ``embedding`` list column as an (n, dim) float32 matrix and a mask of non-null rows."""
    array = column.combine_chunks()
    n = len(array)
    if n == 0:
        return None
    valid = ~np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if not valid.any():
        return None
    if pa.types.is_fixed_size_list(array.type):
        dim = array.type.list_size
        values = array.values.cast(pa.float32()).to_numpy(zero_copy_only=False)
        if array.offset:
            values = values[array.offset * dim:]
        return np.ascontiguousarray(values[: n * dim].reshape(n, dim), dtype=np.float32), valid
    rows = array.to_pylist()
    dims = {len(r) for r in rows if r is not None}
    if len(dims) != 1:
        return None
    dim = dims.pop()
    matrix = np.zeros((n, dim), dtype=np.float32)
    for i, row in enumerate(rows):
        if row is not None:
            matrix[i] = row
    return matrix, valid


def _fingerprint(runs: list[dict[str, Any]]) -> str:
    listing = [(m["run_id"], m["files"]) for m in runs]
    return hashlib.sha256(json.dumps([CACHE_VERSION, listing]).encode()).hexdigest()[:20]


def read_index(index: str, embedding_model: str | None = None) -> LoadedIndex:
    """Read the segments of every complete run, each logical row once, with their embeddings.

    Rows sharing ``DEDUP_KEYS`` (a clip indexed again by a later run with the same settings) are
    reduced to the one with the latest ``created_at`` (ties: the larger ``run_id``); the result is
    sorted by uri, clip index, task, settings hash and prompt. Embeddings count only if their
    file's metadata names ``embedding_model`` (default: the model most rows were embedded with);
    a file with embeddings but no metadata is taken to match if the dimension does.
    """
    # Interim reader over the per-video index (the search package replaces this module).
    from index.read import snapshot

    snap = snapshot(index)
    runs = [{"run_id": "current", "files": sorted(str(x) for x in snap.commits.column("committed_at").to_pylist())}]
    base = _base_schema()
    parts: list[pa.Table] = []
    files_embeddings: list[tuple[int, str | None, np.ndarray, np.ndarray]] = []  # offset, model, matrix, valid
    offset = 0
    raw = snap.table("segments")
    if raw.num_rows:
        parts.append(_conform(raw, base))
        found = _embedding_matrix(raw.column("embedding"))
        if found is not None:
            files_embeddings.append((0, DEFAULT_MODEL_ID, *found))
        offset = raw.num_rows
    fingerprint = _fingerprint(runs)
    if not parts or offset == 0:
        return LoadedIndex(index, base.empty_table(), None, np.zeros(0, dtype=bool), embedding_model, fingerprint)
    table = pa.concat_tables(parts)

    model_rows: Counter[str | None] = Counter()
    for _, model, _, valid in files_embeddings:
        model_rows[model] += int(valid.sum())
    named = [m for m, _ in model_rows.most_common() if m is not None]
    model = embedding_model or (named[0] if named else (DEFAULT_MODEL_ID if model_rows else None))
    dims = {m.shape[1] for off, mod, m, _ in files_embeddings if mod == model}
    dim = dims.pop() if len(dims) == 1 else None
    embeddings = None
    has = np.zeros(table.num_rows, dtype=bool)
    if dim is not None:
        embeddings = np.zeros((table.num_rows, dim), dtype=np.float32)
        for off, mod, matrix, valid in files_embeddings:
            if (mod == model or mod is None) and matrix.shape[1] == dim:
                embeddings[off: off + len(matrix)] = matrix
                has[off: off + len(matrix)] = valid

    order = [("created_at", "descending"), ("run_id", "descending")]
    with_pos = table.append_column("__pos", pa.array(np.arange(table.num_rows)))
    newest_first = with_pos.sort_by(order).append_column("__row", pa.array(np.arange(table.num_rows)))
    # Group-by keeps null keys (prompt, settings_hash may be null) as their own group.
    firsts = newest_first.group_by(list(DEDUP_KEYS), use_threads=False).aggregate([("__row", "min")])
    kept = newest_first.take(firsts["__row_min"]).drop_columns(["__row"])
    kept = kept.sort_by([("uri", "ascending"), ("clip_index", "ascending"), ("task", "ascending"),
                         ("settings_hash", "ascending"), ("prompt", "ascending")])
    positions = kept.column("__pos").to_numpy()
    kept = kept.drop_columns(["__pos"])
    if embeddings is not None:
        embeddings = embeddings[positions]
        has = has[positions]
        if not has.any():
            embeddings = None
    else:
        has = has[positions]
    return LoadedIndex(index, kept, embeddings, has, model if embeddings is not None else embedding_model,
                       fingerprint)


def load_segments(index: str) -> pa.Table:
    """The segments table over all complete runs, each logical row once (the newest wins).

    Columns follow ``SEGMENTS_SCHEMA``; see ``read_index`` for deduplication and order.
    """
    loaded = read_index(index)
    table = loaded.table
    if "embedding" not in SEGMENTS_SCHEMA.names:
        return table
    field_type = SEGMENTS_SCHEMA.field("embedding").type
    if (loaded.embeddings is not None and pa.types.is_fixed_size_list(field_type)
            and field_type.list_size == loaded.embeddings.shape[1]):
        values = pa.array(loaded.embeddings.reshape(-1), type=pa.float32())
        column = pa.FixedSizeListArray.from_arrays(values, field_type.list_size,
                                                   mask=pa.array(~loaded.has_embedding))
        column = column.cast(field_type)
    else:
        column = pa.nulls(table.num_rows, field_type)
    return _conform(table.append_column("embedding", column), SEGMENTS_SCHEMA)


# ---------------------------------------------------------------------------------------------
# Query text


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
    if not isinstance(query, str) or not query.strip():
        raise SearchQueryError("the search query is empty; give some words, e.g. \"person pours water\"")
    tokens = _tokenizer().tokenize([query[:MAX_QUERY_CHARS]], update_vocab=True, return_as="string",
                                   show_progress=False)[0]
    # bm25s stands in "" for a text with no tokens; it must never match the empty documents.
    terms = list(dict.fromkeys(t for t in tokens if t))
    if not terms:
        raise SearchQueryError(f"the search query {query[:80]!r} has no searchable words (stopwords, "
                               "punctuation and one-letter words are ignored)")
    return terms[:MAX_QUERY_TERMS]


def semantic_query_text(query: str) -> str:
    """The query as the embedding model sees it: one line, at most ``MAX_QUERY_CHARS`` characters."""
    return re.sub(r"\s+", " ", query[:MAX_QUERY_CHARS]).strip()


def build_bm25(texts: list[str]) -> bm25s.BM25:
    """A BM25 index over ``texts`` with the search tokenizer."""
    corpus = _tokenizer().tokenize([t or "" for t in texts], update_vocab=True, return_as="tuple",
                                   show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=False)
    return retriever


def _hits(table: pa.Table, rows: np.ndarray, scores: np.ndarray) -> list[SearchHit]:
    picked = table.select(["uri", "video_id", "clip_index", "start_s", "end_s", "task", "text"]).take(
        pa.array(rows, type=pa.int64())).to_pylist()
    return [SearchHit(uri=r["uri"], video_id=r["video_id"], clip_index=r["clip_index"], start_s=r["start_s"],
                      end_s=r["end_s"], score=float(s), task=r["task"], text=r["text"] or "")
            for r, s in zip(picked, scores, strict=True)]


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
    scores = build_bm25(table.column("text").to_pylist()).get_scores(terms)
    matched = np.flatnonzero(scores > 0)
    best = matched[np.argsort(-scores[matched], kind="stable")][:limit]
    return _hits(table, best, scores[best])


# ---------------------------------------------------------------------------------------------
# The search engine


def _top(scores: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` candidates with the highest scores, best first (ties: lower row first)."""
    if len(candidates) > k:
        part = np.argpartition(-scores[candidates], k - 1)[:k]
        candidates = np.sort(candidates[part])
    return candidates[np.argsort(-scores[candidates], kind="stable")]


class SearchEngine:
    """Keyword, semantic and hybrid search over a ``LoadedIndex``.

    The BM25 index, the query model, embeddings missing from the index and the ANN index are
    made on first use and kept for later queries. ``use_cache`` stores BM25 and ANN indexes of
    large indexes (``ANN_MIN_ROWS`` rows or more) under ``INDEX/_search/`` and reuses them while
    the set of complete runs is unchanged.
    """

    def __init__(self, index: LoadedIndex, embedding_model: str | None = None, *, use_cache: bool = True,
                 ann_min_rows: int = ANN_MIN_ROWS) -> None:
        self.index = index
        self.table = index.table
        self.embedding_model = embedding_model or index.model_name
        self.use_cache = use_cache
        self.ann_min_rows = ann_min_rows
        self._bm25: bm25s.BM25 | None = None
        self._model: Any = None
        self._ann: Any = None
        self.timings: dict[str, float] = {}

    @classmethod
    def open(cls, index: str, embedding_model: str | None = None, **kwargs: Any) -> SearchEngine:
        """Read the index at ``index`` (see ``read_index``) and wrap it."""
        return cls(read_index(index, embedding_model), embedding_model, **kwargs)

    @property
    def num_rows(self) -> int:
        """The number of (deduplicated) segments searched."""
        return self.table.num_rows

    # -- cache --------------------------------------------------------------------------------
    def _cache_name(self, kind: str) -> str:
        model = self.embedding_model or DEFAULT_MODEL_ID
        key = hashlib.sha256(f"{self.index.fingerprint}|{model}|{self.num_rows}".encode()).hexdigest()[:20]
        return f"{kind}-{key}"

    def _cache_uri(self, name: str) -> str:
        return storage.join(self.index.location, CACHE_FOLDER, name)

    def _caching(self) -> bool:
        return self.use_cache and self.num_rows >= self.ann_min_rows

    def _drop_stale(self, kind: str, keep: str) -> None:
        try:
            for uri in storage.glob(self._cache_uri(f"{kind}-*")):
                if not uri.rstrip("/").endswith(keep):
                    fs, path = storage.filesystem(uri)
                    fs.rm(path, recursive=True)
        except OSError as exc:  # a read-only index still searches
            log.warning("could not remove stale search cache files: %s", exc)

    # -- keyword ------------------------------------------------------------------------------
    def bm25(self) -> bm25s.BM25:
        """The BM25 index of the segment texts (cached for large indexes)."""
        if self._bm25 is not None:
            return self._bm25
        started = time.perf_counter()
        name = self._cache_name("bm25")
        uri = self._cache_uri(name)
        if self._caching() and storage.exists(storage.join(uri, "params.index.json")):
            with tempfile.TemporaryDirectory() as tmp:
                local = _local_copy(uri, tmp)
                self._bm25 = bm25s.BM25.load(local, show_progress=False)
        else:
            self._bm25 = build_bm25(self.table.column("text").to_pylist())
            if self._caching():
                try:
                    with tempfile.TemporaryDirectory() as tmp:
                        self._bm25.save(tmp, show_progress=False)
                        for file in os.listdir(tmp):
                            storage.write_bytes(storage.join(uri, file), Path(tmp, file).read_bytes())
                    self._drop_stale("bm25", name)
                except OSError as exc:
                    log.warning("could not store the BM25 index next to the index: %s", exc)
        self.timings["bm25_load_s"] = time.perf_counter() - started
        return self._bm25

    def keyword_scores(self, terms: list[str]) -> np.ndarray:
        """BM25 scores of every row for the query terms."""
        if self.num_rows == 0:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self.bm25().get_scores(terms), dtype=np.float32)

    def keyword_coverage(self, terms: list[str]) -> np.ndarray:
        """Per row, the IDF-weighted share of ``terms`` it contains (0 to 1).

        IDF is BM25's, ``log(1 + (n - df + 0.5) / (df + 0.5))``; terms no row contains count in
        the total, so they lower every row's coverage alike.
        """
        n = self.num_rows
        coverage = np.zeros(n, dtype=np.float32)
        if n == 0:
            return coverage
        total = 0.0
        for term in terms:
            docs = self._postings(term)
            idf = float(np.log1p((n - len(docs) + 0.5) / (len(docs) + 0.5)))
            total += idf
            coverage[docs] += idf
        return coverage / total if total > 0 else coverage

    def _postings(self, term: str) -> np.ndarray:
        """The rows whose text contains ``term`` (a stemmed token)."""
        retriever = self.bm25()
        token = retriever.vocab_dict.get(term)
        if not term or token is None:
            return np.zeros(0, dtype=np.int64)
        scores = getattr(retriever, "scores", None)
        if isinstance(scores, dict) and {"indptr", "indices"} <= scores.keys():
            indptr = scores["indptr"]
            return np.asarray(scores["indices"][indptr[token]: indptr[token + 1]], dtype=np.int64)
        return np.flatnonzero(np.asarray(retriever.get_scores([term])) > 0)

    # -- semantic -----------------------------------------------------------------------------
    def model(self) -> Any:
        """The query embedding model (the index's, unless another was named)."""
        if self._model is None:
            try:
                self._model = load_embedding_model(self.embedding_model)
            except Exception as exc:  # an unreachable hub id, a bad folder
                raise SearchQueryError(
                    f"cannot load the embedding model {self.embedding_model or DEFAULT_MODEL_ID!r} "
                    f"({type(exc).__name__}: {exc}); pass --embedding-model with a local copy, "
                    "or use --mode keyword") from exc
        return self._model

    def embeddings(self) -> np.ndarray:
        """Every row's unit embedding; rows the index lacks are embedded from their text now."""
        index = self.index
        if index.embeddings is not None and index.has_embedding.all():
            return index.embeddings
        missing = np.flatnonzero(~index.has_embedding)
        if len(missing) > MAX_QUERY_TIME_EMBED:
            raise SearchQueryError(
                f"{len(missing)} segments of the index have no embedding from "
                f"{self.embedding_model or DEFAULT_MODEL_ID!r}; rebuild the index with embeddings, "
                "or use --mode keyword")
        started = time.perf_counter()
        model = self.model()
        rows = self.table.select(["text", "events"]).take(pa.array(missing, type=pa.int64())).to_pylist()
        texts = [row_text(r) for r in rows]
        vectors = np.zeros((len(rows), model_dimension(model)), dtype=np.float32)
        with_text = [i for i, t in enumerate(texts) if t]
        if with_text:  # a row with no text at all keeps a zero vector: cosine 0 with any query
            vectors[with_text] = embed_texts([texts[i] for i in with_text], model)
        if index.embeddings is None or index.embeddings.shape[1] != vectors.shape[1]:
            index.embeddings = np.zeros((self.num_rows, model_dimension(model)), dtype=np.float32)
            index.has_embedding = np.zeros(self.num_rows, dtype=bool)
        index.embeddings[missing] = vectors
        index.has_embedding[missing] = True
        self.timings["embed_missing_s"] = time.perf_counter() - started
        return index.embeddings

    def embed_query(self, query: str) -> np.ndarray:
        """The query's unit embedding."""
        return embed_texts([semantic_query_text(query)], self.model())[0]

    def ann(self) -> Any:
        """The faiss IVF index over the embeddings (loaded from the cache or built and stored)."""
        if self._ann is not None:
            return self._ann
        import faiss

        started = time.perf_counter()
        name = self._cache_name("ann") + ".faiss"
        uri = self._cache_uri(name)
        if self.use_cache and storage.exists(uri):
            data = np.frombuffer(storage.read_bytes(uri), dtype=np.uint8)
            self._ann = faiss.deserialize_index(data)
        else:
            self._ann = build_ann(self.embeddings())
            if self.use_cache:
                try:
                    storage.write_bytes(uri, faiss.serialize_index(self._ann).tobytes())
                    self._drop_stale("ann", name)
                except OSError as exc:
                    log.warning("could not store the ANN index next to the index: %s", exc)
        self._ann.nprobe = ann_nprobe(self._ann.nlist)
        self.timings["ann_load_s"] = time.perf_counter() - started
        return self._ann

    def semantic_candidates(self, qvec: np.ndarray, allowed: np.ndarray | None, k: int) -> np.ndarray:
        """Sorted row numbers worth scoring exactly: all allowed rows, or ANN's best ``k`` on large indexes."""
        n = self.num_rows
        count = n if allowed is None else int(allowed.sum())
        if n < self.ann_min_rows or count < self.ann_min_rows // 4:
            return np.arange(n) if allowed is None else np.flatnonzero(allowed)
        fraction = count / n
        want = min(n, int(k / max(fraction, 1e-6)) + k)
        _, ids = self.ann().search(qvec[None, :].astype(np.float32), min(want, 4096))
        found = np.unique(ids[0][ids[0] >= 0])  # sorted: all n rows found means exactly arange(n)
        if allowed is not None:
            found = found[allowed[found]]
        return found

    # -- search -------------------------------------------------------------------------------
    def search_hits(self, query: str, mode: str = DEFAULT_MODE, filters: SearchFilters | None = None,
                    limit: int = 10, min_score: float | None = None,
                    min_similarity: float = SEMANTIC_FLOOR) -> list[SearchHit]:
        """The best ``limit`` segments for ``query`` in ``mode``, best first, before merging.

        Scores: BM25 (keyword), cosine (semantic) or the fused score (hybrid, see the module
        docstring); ``min_score`` drops hits below it, ``min_similarity`` is the semantic floor.
        """
        if mode not in MODES:
            raise SearchQueryError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        if limit < 1:
            raise SearchQueryError(f"the result limit must be at least 1, not {limit}")
        terms = query_terms(query)
        filters = filters or SearchFilters()
        filters.validate()
        if self.num_rows == 0:
            return []
        allowed = filters.mask(self.table) if filters.active else None
        n = self.num_rows
        if mode == "keyword":
            scores = self.keyword_scores(terms)
            ok = scores > 0 if allowed is None else (scores > 0) & allowed
            candidates = np.flatnonzero(ok)
        else:
            qvec = self.embed_query(query)
            embeddings = self.embeddings()
            k = max(ANN_CANDIDATES, limit * POOL_PER_RESULT)
            candidates = self.semantic_candidates(qvec, allowed, k)
            coverage = self.keyword_coverage(terms) if mode == "hybrid" else None
            if coverage is not None and candidates.size < n:  # ANN: rows with the query's words join in
                matched = np.flatnonzero(coverage > 0)
                if allowed is not None:
                    matched = matched[allowed[matched]]
                candidates = np.union1d(candidates, _top(coverage, matched, k))
            # All rows: one matrix-vector product, no gathered copy of the matrix.
            cosine = embeddings @ qvec if candidates.size == n else embeddings[candidates] @ qvec
            keep = cosine >= min_similarity
            scores = np.full(n, -np.inf, dtype=np.float32)
            scores[candidates] = cosine
            if coverage is not None:
                keep |= coverage[candidates] > 0
                scores[candidates] += HYBRID_KEYWORD_WEIGHT * coverage[candidates] ** 2
            candidates = candidates[keep]
        if min_score is not None:
            candidates = candidates[scores[candidates] >= min_score]
        best_rows = _top(scores, candidates, limit)
        return _hits(self.table, best_rows, scores[best_rows])

    def search(self, query: str, mode: str = DEFAULT_MODE, filters: SearchFilters | None = None,
               limit: int = 10, min_score: float | None = None,
               merge_gap_s: float | None = DEFAULT_MERGE_GAP_S) -> list[Moment]:
        """The best ``limit`` moments: hits merged per video (``merge_gap_s=None``: no merging)."""
        if merge_gap_s is not None and (not np.isfinite(merge_gap_s) or merge_gap_s < 0):
            raise SearchQueryError(f"the merge gap must be a number of seconds >= 0, not {merge_gap_s}")
        pool = limit if merge_gap_s is None else max(limit * POOL_PER_RESULT, MIN_POOL)
        hits = self.search_hits(query, mode, filters, pool, min_score)
        return merge_hits(hits, merge_gap_s)[:limit]


def build_ann(embeddings: np.ndarray) -> Any:
    """A faiss IVF index (8-bit scalar quantised, inner product) over unit ``embeddings``."""
    import faiss

    n, dim = embeddings.shape
    nlist = int(max(1, min(4096, np.sqrt(n), n // 39)))  # faiss wants 39 training points a list
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    sample = embeddings[np.sort(rng.choice(n, size=min(n, nlist * 64), replace=False))]
    index.train(sample)
    index.add(embeddings)
    return index


def ann_nprobe(nlist: int) -> int:
    """Inverted lists probed per query: enough for high recall before the exact re-scoring."""
    return int(min(nlist, max(16, nlist // 16)))


def _local_copy(uri: str, tmp: str) -> str:
    """A local folder holding the files under ``uri`` (itself if local)."""
    if not storage.is_remote(uri):
        return uri
    storage.download_tree(uri, tmp)
    return tmp


def merge_hits(hits: list[SearchHit], gap_s: float | None = DEFAULT_MERGE_GAP_S) -> list[Moment]:
    """Merge hits of one video and task whose spans overlap, touch or are ``gap_s`` apart.

    A moment spans its hits, scores as the best of them and lists their texts in time order
    (repeated texts once). Moments come best first; ``gap_s=None`` makes one moment per hit.
    """
    def moment(group: list[SearchHit]) -> Moment:
        ordered = sorted(group, key=lambda h: (h.start_s, h.end_s, h.clip_index))
        texts = list(dict.fromkeys(h.text for h in ordered if h.text))
        return Moment(uri=ordered[0].uri, video_id=ordered[0].video_id, task=ordered[0].task,
                      start_s=min(h.start_s for h in ordered), end_s=max(h.end_s for h in ordered),
                      score=max(h.score for h in ordered), text=" | ".join(texts), hits=tuple(ordered))

    if gap_s is None:
        return [moment([h]) for h in hits]
    groups: dict[tuple[str, str], list[SearchHit]] = {}
    for hit in hits:
        groups.setdefault((hit.video_id, hit.task), []).append(hit)
    moments: list[tuple[int, Moment]] = []
    rank = {id(h): i for i, h in enumerate(hits)}
    for group in groups.values():
        group.sort(key=lambda h: (h.start_s, h.end_s))
        current = [group[0]]
        end = group[0].end_s
        for hit in group[1:]:
            if hit.start_s <= end + gap_s:
                current.append(hit)
                end = max(end, hit.end_s)
            else:
                moments.append((min(rank[id(h)] for h in current), moment(current)))
                current, end = [hit], hit.end_s
        moments.append((min(rank[id(h)] for h in current), moment(current)))
    moments.sort(key=lambda pair: (-pair[1].score, pair[0]))
    return [m for _, m in moments]


# ---------------------------------------------------------------------------------------------
# Output


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


def format_table(hits: list[SearchHit] | list[Moment]) -> str:
    """A fixed-width terminal table of hits or moments: rank, score, seconds, m:ss, uri and text."""
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


def moment_dict(moment: Moment) -> dict[str, Any]:
    """A moment as JSON-ready data: its span, score, text, first clip index, clip indices and merged hits."""
    return {"uri": moment.uri, "video_id": moment.video_id, "task": moment.task, "start_s": moment.start_s,
            "end_s": moment.end_s, "score": moment.score, "text": moment.text,
            "clip_index": moment.clip_indices[0], "clip_indices": moment.clip_indices, "hits": [asdict(h) for h in moment.hits]}


def hits_to_json(hits: list[SearchHit] | list[Moment]) -> str:
    """Hits (every ``SearchHit`` field) or moments (see ``moment_dict``) as a JSON array."""
    data = [moment_dict(h) if isinstance(h, Moment) else asdict(h) for h in hits]
    return json.dumps(data, indent=1, ensure_ascii=False)


def browser_url(uri: str) -> str:
    """A URL a browser can open for a video uri.

    Local paths become ``file://`` URLs, ``gs://bucket/key`` becomes
    ``https://storage.googleapis.com/bucket/key`` (it plays only if the object is public or the
    browser is signed in to an account that may read it); other URLs are kept.
    """
    if uri.startswith("gs://"):
        bucket_key = uri[len("gs://"):]
        bucket, _, key = bucket_key.partition("/")
        from urllib.parse import quote

        return f"https://storage.googleapis.com/{bucket}/{quote(key)}"
    if storage.is_remote(uri) or uri.startswith("file://"):
        return uri
    return Path(os.path.abspath(uri)).as_uri()


def thumbnail_jpeg(uri: str, at_s: float, width: int = THUMB_WIDTH) -> bytes:
    """A JPEG of the frame shown at ``at_s`` seconds (the first frame at or after it), ``width`` px wide."""
    import av

    with storage.open_read(uri) if storage.is_remote(uri) else open(uri, "rb") as f, av.open(f) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if stream.time_base is not None and at_s > 0:
            container.seek(int(at_s / stream.time_base), stream=stream, backward=True, any_frame=False)
        chosen = None
        for frame in container.decode(stream):
            chosen = frame
            if frame.time is not None and frame.time + 1e-6 >= at_s:
                break
        if chosen is None:
            raise ValueError(f"no frame decoded from {uri}")
        image = chosen.to_image()
        height = max(1, round(image.height * width / image.width))
        buffer = io.BytesIO()
        image.resize((width, height)).save(buffer, format="JPEG", quality=80)
        return buffer.getvalue()


_PAGE_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#f6f6f6;color:#222}
h1{font-size:1.2rem} .note{color:#666;font-size:.85rem}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:1rem}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px #0002;padding:.6rem;cursor:pointer}
.card img,.card video{width:100%;border-radius:4px;display:block;background:#000}
.meta{display:flex;justify-content:space-between;font-size:.85rem;margin:.4rem 0}
.uri{font-family:monospace;font-size:.8rem;word-break:break-all;color:#555}
.text{font-size:.9rem;margin-top:.3rem} .missing{padding:3rem 0;text-align:center;background:#ddd}
"""

_PAGE_SCRIPT = """
document.querySelectorAll('.card').forEach(function (card) {
  card.addEventListener('click', function () {
    if (card.querySelector('video')) return;
    var video = document.createElement('video');
    video.controls = true; video.autoplay = true;
    video.src = card.dataset.src;
    video.addEventListener('error', function () {
      card.querySelector('.note').textContent = 'This browser cannot open ' + card.dataset.src;
    });
    var thumb = card.querySelector('.thumb');
    thumb.replaceWith(video);
    video.play().catch(function () {});
  });
});
"""


def render_html(moments: list[Moment], query: str, mode: str, searched: int) -> str:
    """A self-contained results page: one card per moment with a thumbnail (JPEG data URI) of
    its midpoint, its uri, times and text; clicking a card plays ``uri#t=start,end``."""
    cards = []
    thumbs: dict[tuple[str, float], str] = {}
    for rank, m in enumerate(moments, start=1):
        middle = round((m.start_s + m.end_s) / 2, 3)
        key = (m.uri, middle)
        if key not in thumbs:
            try:
                data = base64.b64encode(thumbnail_jpeg(m.uri, middle)).decode()
                thumbs[key] = f'<img class="thumb" alt="frame at {middle:.2f} s" src="data:image/jpeg;base64,{data}">'
            except Exception as exc:  # a missing or unreadable video still gets its card
                log.warning("no thumbnail for %s at %.2f s: %s", m.uri, middle, exc)
                thumbs[key] = f'<div class="thumb missing">no thumbnail ({html.escape(type(exc).__name__)})</div>'
        src = f"{browser_url(m.uri)}#t={m.start_s:.3f},{m.end_s:.3f}"
        clips = ", ".join(str(c) for c in m.clip_indices)
        cards.append(
            f'<div class="card" data-rank="{rank}" data-start="{m.start_s:.3f}" data-end="{m.end_s:.3f}" '
            f'data-src="{html.escape(src)}" title="click to play from {m.start_s:.2f} s">'
            f"{thumbs[key]}"
            f'<div class="meta"><span class="times">{clock(m.start_s)}&ndash;{clock(m.end_s)} '
            f'(<span class="start">{m.start_s:.2f}</span>&ndash;<span class="end">{m.end_s:.2f}</span> s)</span>'
            f'<span class="score">#{rank} &middot; {m.score:.3f}</span></div>'
            f'<div class="uri">{html.escape(m.uri)}</div>'
            f'<div class="text">{html.escape(m.text)}</div>'
            f'<div class="note">{html.escape(m.task)} &middot; clips {clips}</div></div>')
    body = "\n".join(cards) if cards else '<p class="empty">No moment matches.</p>'
    gs_note = ('<p class="note">gs:// videos play from storage.googleapis.com only if the object is public '
               "or this browser is signed in to an account that can read it.</p>"
               if any(m.uri.startswith("gs://") for m in moments) else "")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(shorten(query, 80))} - plm-index search</title>"
            f"<style>{_PAGE_STYLE}</style></head><body>"
            f"<h1>{html.escape(shorten(query, 200))}</h1>"
            f'<p class="note">{len(moments)} moments &middot; {html.escape(mode)} search over {searched} segments '
            f"&middot; click a card to play the clip</p>{gs_note}"
            f'<div class="cards">{body}</div><script>{_PAGE_SCRIPT}</script></body></html>\n')


def run_search(index: str, query: str, limit: int = 10, as_json: bool = False, *, mode: str = DEFAULT_MODE,
               filters: SearchFilters | None = None, min_score: float | None = None,
               merge_gap_s: float | None = DEFAULT_MERGE_GAP_S, html_out: str | None = None,
               embedding_model: str | None = None) -> str:
    """Search the index at ``index`` and render the moments as a table or JSON.

    With ``html_out`` the results page is also written there (local path) and the table or JSON
    is still returned. Raises ``FileNotFoundError`` if there is no index there,
    ``SearchQueryError`` for an unusable query, mode, limit or filter and ``EmptyIndexError`` if
    no complete run holds any segment.
    """
    query_terms(query)  # a bad query is reported before the index is read
    if mode not in MODES:
        raise SearchQueryError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
    if limit < 1:
        raise SearchQueryError(f"the result limit must be at least 1, not {limit}")
    (filters or SearchFilters()).validate()
    if not storage.exists(index):
        raise FileNotFoundError(f"no index at {index}")
    engine = SearchEngine.open(index, embedding_model)
    if engine.num_rows == 0:
        raise EmptyIndexError(f"the index at {index} has no segments in any complete run "
                              "(no build has finished there, or it indexed no clips)")
    moments = engine.search(query, mode, filters, limit, min_score, merge_gap_s)
    if html_out:
        page = render_html(moments, query, mode, engine.num_rows)
        folder = os.path.dirname(os.path.abspath(html_out))
        os.makedirs(folder, exist_ok=True)
        tmp = f"{html_out}.tmp-{os.getpid()}"
        Path(tmp).write_text(page, encoding="utf-8")
        shutil.move(tmp, html_out)
    if as_json:
        return hits_to_json(moments)
    if not moments:
        return f"No segment matches {query!r} ({engine.num_rows} segments searched)."
    return format_table(moments)


__all__ = ["DEFAULT_MODE", "HYBRID_KEYWORD_WEIGHT", "MODES", "SEMANTIC_FLOOR", "EmptyIndexError", "LoadedIndex", "Moment",
           "SearchEngine", "SearchFilters", "SearchHit", "SearchQueryError", "build_ann", "clock",
           "format_table", "hits_to_json", "keyword_search", "load_segments", "merge_hits", "query_terms",
           "read_index", "render_html", "run_search", "thumbnail_jpeg"]
