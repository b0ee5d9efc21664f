"""Keyword, semantic and hybrid ranking over the derived search index.

**Keyword.** BM25 (k1 1.5, b 0.75) over unit text with ``search.query.tokenize``; statistics are
summed over all parts. A unit sharing no term with the query is not a keyword hit.

**Semantic.** Cosine between the query's embedding (``core.text_embedding``, numpy, no torch) and
unit embeddings. A part of 65,536 rows or more probes its IVF index (``search.ivf``: the 32
nearest of about sqrt(rows) lists, int8); a smaller part is scanned whole (int8, in chunks).
Either way the best 1,000 candidates are re-scored exactly from float16. At a million units the
IVF path finds 95 % of the exact scan's top 10 (bench/search_latency.py) in a thirtieth of the
time; filters that leave few rows score exactly those rows, and a part whose probed lists give
fewer hits than asked is scanned whole. ``SearchEngine(..., ann=False)`` always scans.

**Hybrid (the default): cosine plus a bounded keyword-coverage boost.**
``score = cosine + HYBRID_KEYWORD_WEIGHT * coverage ** 2``, where ``coverage`` is the IDF-weighted
share of the query's terms that the unit contains (1: all of them). Cosine leads; a unit that
holds every query word gains at most 0.1. Hybrid hits are units with a cosine of at least
``SEMANTIC_FLOOR`` or at least one query term.

Why this fusion (measured on tests/search/test_retrieval.py, 47 segments, 20 paraphrased queries,
all-MiniLM-L6-v2): keyword alone reached recall@1 0.50 / recall@5 0.85, semantic alone
0.95 / 1.00. Reciprocal rank fusion fell to 0.80 / 1.00 and adding max-normalised BM25 to the
cosine to 0.90 down to 0.70, because a shared word with a near-miss outweighs a closer paraphrase.
The coverage boost kept 0.95 / 1.00 for every weight tried (0.03 to 0.2).
"""

from __future__ import annotations

import time

import numpy as np
from threadpoolctl import ThreadpoolController

from core.text_embedding import UnsupportedEmbeddingModel, query_embedder
from search.ivf import NPROBE
from search.moments import DEFAULT_MERGE_GAP_S, Moment, SearchHit, merge_hits
from search.query import SearchFilters, SearchQueryError, query_terms, semantic_query_text
from search.store import Part, Store, open_store
from search.text_index import bm25_term_scores, idf

_BLAS = ThreadpoolController()
MODES = ("keyword", "semantic", "hybrid")
DEFAULT_MODE = "hybrid"
HYBRID_KEYWORD_WEIGHT = 0.1
# Semantic (and hybrid) hits need at least this cosine (hybrid: or a query term in common).
SEMANTIC_FLOOR = 0.2
# Hits gathered (per requested moment) before merging into moments.
POOL_PER_RESULT = 5
MIN_POOL = 50
# The int8 scan's cosine is within about 0.005 of the exact one: candidates this close to the floor
# are kept, and this many of the best per part are re-scored exactly before the final ranking.
APPROX_MARGIN = 0.01
RESCORE_POOL = 1000
# Filters that leave at most this many rows of a part: those rows are scored, not the IVF lists.
FILTERED_EXACT_ROWS = 131_072
# Hybrid: rows holding every query term joined to the probed lists' rows, at most this many.
HYBRID_EXTRA_ROWS = 16_384


def _best(scores: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest ``scores``, best first (ties: lower row first)."""
    if len(scores) > k:
        chosen = np.argpartition(-scores, k - 1)[:k]
    else:
        chosen = np.arange(len(scores))
    return chosen[np.lexsort((rows[chosen], -scores[chosen]))]


class SearchEngine:
    """Ranks units of a derived search index (``search.store``) for a query; the CLI and server call it."""

    def __init__(self, store: Store, embedding_model: str | None = None, location: str | None = None, *,
                 ann: bool = True, nprobe: int = NPROBE) -> None:
        self.store = store
        self.ann = ann
        self.nprobe = nprobe
        self.location = location or store.root
        self.embedding_model = embedding_model
        self.timings: dict[str, float] = {}

    @classmethod
    def open(cls, location: str, embedding_model: str | None = None, sync_first: bool = True, *,
             ann: bool = True, settings: str | None = None) -> SearchEngine:
        """Open the derived search index of the index at ``location`` (synced first, see ``open_store``).

        ``ann=False`` scans every vector instead of probing the IVF index (the exact baseline);
        ``settings`` searches that settings hash's rows alone (older settings a newer one hides).
        """
        return cls(open_store(location, embedding_model, sync_first=sync_first, settings=settings), embedding_model,
                   location, ann=ann)

    @property
    def num_rows(self) -> int:
        """The number of current units searched."""
        return self.store.num_units

    def embed_query(self, query: str) -> np.ndarray:
        """The query's unit embedding, from the light numpy embedder of the index's model."""
        model = self.embedding_model or self.store.model
        try:
            embedder = query_embedder(model)
        except (UnsupportedEmbeddingModel, RuntimeError) as exc:
            raise SearchQueryError(f"cannot embed the query with {model!r}: {exc}; pass --embedding-model with a "
                                   "local BERT sentence-transformers folder, or use --mode keyword") from exc
        # One short query is a chain of tiny matrix products: BLAS threads only add hand-offs
        # (measured under load: 11-79 ms with two threads, 7-25 ms with one).
        with _BLAS.limit(limits=1, user_api="blas"):
            return embedder.embed([semantic_query_text(query)])[0]

    def _allowed(self, part: Part, filters: SearchFilters) -> np.ndarray | None:
        mask = part.live_mask()
        if not filters.active:
            return mask
        keep = np.ones(part.rows, dtype=bool) if mask is None else mask
        if filters.video is not None:
            values, codes = part.filter_column("uri")
            matches = filters.uri_matches(values)
            by_uri = matches[codes] if len(matches) else np.zeros(part.rows, dtype=bool)
            copied = self._copied_videos(filters)
            if copied:  # identical copies answer by their own names (index.read rule 8)
                ids, id_codes = part.filter_column("video_id")
                by_uri = by_uri | np.isin(np.asarray(ids, dtype=object), list(copied))[id_codes]
            keep &= by_uri
        if filters.task is not None:
            values, codes = part.filter_column("task")
            keep &= (np.asarray(values, dtype=object) == filters.task)[codes] if values else False
        keep &= filters.time_overlaps(part.filter_column("start_s") if filters.end_s is not None else None,
                                      part.filter_column("end_s") if filters.start_s is not None else None)
        return keep

    def _copied_videos(self, filters: SearchFilters) -> dict[str, str]:
        """Content id -> the copy's uri, for identical copies whose own uri matches the ``--video`` glob."""
        copies = self.store.copies
        if filters.video is None or not copies:
            return {}
        uris = sorted(copies)
        return {copies[u]: u for u, hit in zip(uris, filters.uri_matches(uris), strict=True) if hit}

    def _named(self, uri: str, video_id: str, filters: SearchFilters) -> str:
        """The uri a hit is shown under: a copy's own name when only the copy matches ``--video``."""
        if filters.video is None or filters.uri_matches([uri])[0]:
            return uri
        return self._copied_videos(filters).get(video_id, uri)

    def _candidates(self, part: Part, qvec: np.ndarray, lexical: np.ndarray, allowed: np.ndarray | None,
                    mode: str, full_scan: bool) -> tuple[np.ndarray, np.ndarray, bool]:
        """Rows worth ranking and their int8 cosines, and whether they came from the IVF index.

        A part without an IVF index (or ``full_scan``) is scanned whole. With filters that leave
        few rows, exactly those rows are scored. Otherwise the IVF index's nearest lists are
        probed, and in hybrid mode the rows holding every query term are added (up to
        ``HYBRID_EXTRA_ROWS``), so an exact wording far from the query's meaning still ranks.
        """
        index = None if full_scan or not self.ann else part.ivf
        if allowed is not None and (index is None or np.count_nonzero(allowed) <= FILTERED_EXACT_ROWS):
            rows = np.flatnonzero(allowed)
            if index is not None or len(rows) <= FILTERED_EXACT_ROWS:
                return rows, part.approximate_cosine_at(qvec, rows), False
        if index is None:
            return np.arange(part.rows), part.approximate_cosine(qvec), False
        with _BLAS.limit(limits=1, user_api="blas"):  # small blocks: one thread (3x faster under load)
            rows, approx = index.probe(qvec, self.nprobe)
        if mode == "hybrid":
            extra = np.setdiff1d(np.flatnonzero(lexical >= 1.0 - 1e-6)[:HYBRID_EXTRA_ROWS], rows, assume_unique=True)
            if len(extra):
                rows = np.concatenate([rows, extra])
                approx = np.concatenate([approx, part.approximate_cosine_at(qvec, extra)])
        return rows, approx, True

    def search_hits(self, query: str, mode: str = DEFAULT_MODE, filters: SearchFilters | None = None,
                    limit: int = 10, min_score: float | None = None,
                    min_similarity: float = SEMANTIC_FLOOR) -> list[SearchHit]:
        """The best ``limit`` units for ``query`` in ``mode``, best first, before merging into moments."""
        if mode not in MODES:
            raise SearchQueryError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        if limit < 1:
            raise SearchQueryError(f"the result limit must be at least 1, not {limit}")
        terms = query_terms(query)
        filters = filters or SearchFilters()
        filters.validate()
        parts = [p for p in self.store.parts if p.rows]
        if not parts:
            return []
        started = time.perf_counter()
        total_rows = sum(p.rows for p in parts)
        avg_length = sum(p.terms for p in parts) / total_rows
        postings = [{t: p.text.postings(t) for t in terms} for p in parts]
        term_idf = {t: idf(total_rows, sum(len(post[t][0]) for post in postings)) for t in terms}
        idf_total = sum(term_idf.values())
        qvec = self.embed_query(query) if mode != "keyword" else None
        self.timings["embed_s"] = time.perf_counter() - started
        found: list[tuple[float, int, int]] = []  # score, part, row
        self.timings["rows_scored"] = 0
        for number, (part, post) in enumerate(zip(parts, postings, strict=True)):
            allowed = self._allowed(part, filters)
            lexical = np.zeros(part.rows, dtype=np.float32)
            for term in terms:
                rows, tf = post[term]
                if not len(rows):
                    continue
                if mode == "keyword":
                    lengths = np.asarray(part.text.lengths[rows], np.float32)
                    lexical[rows] += bm25_term_scores(tf, lengths, avg_length, term_idf[term])
                else:
                    lexical[rows] += term_idf[term] / idf_total if idf_total > 0 else 0.0
            if mode == "keyword":
                keep = lexical > 0
                if allowed is not None:
                    keep &= allowed
                if min_score is not None:
                    keep &= lexical >= min_score
                candidates = np.flatnonzero(keep)
                best = candidates[_best(lexical[candidates], candidates, limit)]
                found.extend((float(lexical[r]), number, int(r)) for r in best)
                continue
            for full_scan in (False, True):
                rows, approx, probed = self._candidates(part, qvec, lexical, allowed, mode, full_scan)
                self.timings["rows_scored"] += len(rows)
                boost = HYBRID_KEYWORD_WEIGHT * lexical[rows] ** 2 if mode == "hybrid" else 0.0
                scores = approx + boost
                keep = scores >= min_similarity - APPROX_MARGIN
                if mode == "hybrid":
                    keep |= lexical[rows] > 0
                if allowed is not None:
                    keep &= allowed[rows]
                rows, scores = rows[keep], scores[keep]
                # Rank on the int8 cosine, then re-score a generous pool exactly (float16).
                pool = rows[_best(scores, rows, max(limit * 2, RESCORE_POOL))]
                cosine = part.exact_cosine(qvec, pool)
                final = cosine + (HYBRID_KEYWORD_WEIGHT * lexical[pool] ** 2 if mode == "hybrid" else 0.0)
                keep = cosine >= min_similarity
                if mode == "hybrid":
                    keep |= lexical[pool] > 0
                if min_score is not None:
                    keep &= final >= min_score
                # Too few hits from the probed lists: scan the part whole rather than answer short.
                if keep.sum() >= limit or not probed:
                    break
            pool, final = pool[keep], final[keep]
            best = _best(final, pool, limit)
            found.extend((float(final[i]), number, int(pool[i])) for i in best)
        found.sort(key=lambda item: (-item[0], item[1], item[2]))
        found = found[:limit]
        hits: list[SearchHit | None] = [None] * len(found)
        for number, part in enumerate(parts):
            mine = [(i, row) for i, (_, n, row) in enumerate(found) if n == number]
            if not mine:
                continue
            rows = part.read_units(np.array([row for _, row in mine])).to_pylist()
            for (i, _), r in zip(mine, rows, strict=True):
                hits[i] = SearchHit(uri=self._named(r["uri"], r["video_id"], filters), video_id=r["video_id"],
                                    clip_index=r["clip_index"], start_s=r["start_s"], end_s=r["end_s"], score=found[i][0], task=r["task"],
                                    text=r["text"] or "")
        self.timings["search_s"] = time.perf_counter() - started
        return [h for h in hits if h is not None]

    def search(self, query: str, mode: str = DEFAULT_MODE, filters: SearchFilters | None = None,
               limit: int = 10, min_score: float | None = None,
               merge_gap_s: float | None = DEFAULT_MERGE_GAP_S) -> list[Moment]:
        """The best ``limit`` moments: hits merged per video and task (``merge_gap_s=None``: no merging)."""
        if merge_gap_s is not None and (not np.isfinite(merge_gap_s) or merge_gap_s < 0):
            raise SearchQueryError(f"the merge gap must be a number of seconds >= 0, not {merge_gap_s}")
        pool = limit if merge_gap_s is None else max(limit * POOL_PER_RESULT, MIN_POOL)
        hits = self.search_hits(query, mode, filters, pool, min_score)
        return merge_hits(hits, merge_gap_s)[:limit]
