"""The search calls the CLI and the server make: check the request, rank on an opened engine, render.

``search_moments`` answers one request on an opened ``SearchEngine`` (the server keeps one open);
``run_search`` opens the engine, calls it and renders a table, JSON or a page (the CLI).
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from search.engine import DEFAULT_MODE, MODES, SearchEngine
from search.moments import DEFAULT_MERGE_GAP_S, Moment
from search.query import EmptyIndexError, SearchFilters, SearchQueryError, clean_query_text, query_terms
from search.render import format_table, hits_to_json, render_html


def check_request(query: str, mode: str, limit: int, filters: SearchFilters | None,
                  min_score: float | None = None) -> SearchFilters:
    """Reject an unusable query, mode, limit, filter or score floor before the index is read; return the filters."""
    query_terms(query)
    if min_score is not None and not math.isfinite(min_score):
        raise SearchQueryError(f"--min-score must be a finite number (a score floor such as 0.3), not {min_score}")
    if mode not in MODES:
        raise SearchQueryError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
    if limit < 1:
        raise SearchQueryError(f"the result limit must be at least 1, not {limit}")
    filters = filters or SearchFilters()
    filters.validate()
    return filters


def search_moments(engine: SearchEngine, query: str, limit: int = 10, *, mode: str = DEFAULT_MODE,
                   filters: SearchFilters | None = None, min_score: float | None = None,
                   merge_gap_s: float | None = DEFAULT_MERGE_GAP_S) -> list[Moment]:
    """The moments for one request on an opened engine: what the CLI and the server both answer with.

    Raises ``SearchQueryError`` for an unusable request and ``EmptyIndexError`` if the index holds
    nothing searchable.
    """
    query = clean_query_text(query)
    filters = check_request(query, mode, limit, filters, min_score)
    if engine.num_rows == 0:
        raise EmptyIndexError(f"the index at {engine.location} has no searchable segments (no video is committed "
                              "there yet, or none produced text)")
    return engine.search(query, mode, filters, limit, min_score, merge_gap_s)


def run_search(index: str, query: str, limit: int = 10, as_json: bool = False, *, mode: str = DEFAULT_MODE,
               filters: SearchFilters | None = None, min_score: float | None = None,
               merge_gap_s: float | None = DEFAULT_MERGE_GAP_S, html_out: str | None = None,
               embedding_model: str | None = None, settings: str | None = None) -> str:
    """Search the index at ``index`` and render the moments as a table or JSON.

    With ``html_out`` the results page is also written there (local path). ``settings`` searches
    that settings hash's rows alone (an older settings that a newer build hides). Raises
    ``FileNotFoundError`` if there is no index there, ``SearchQueryError`` for an unusable query,
    mode, limit or filter and ``EmptyIndexError`` if the index holds nothing searchable.
    """
    query = clean_query_text(query)
    check_request(query, mode, limit, filters, min_score)  # a bad request is reported before the index is read
    engine = SearchEngine.open(index, embedding_model, settings=settings)
    moments = search_moments(engine, query, limit, mode=mode, filters=filters, min_score=min_score,
                             merge_gap_s=merge_gap_s)
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
        return f"No segment matches {query!r} ({engine.num_rows} units searched)."
    return format_table(moments)
