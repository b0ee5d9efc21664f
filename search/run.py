"""The one search call the CLI makes (and tests use): check the request, open, rank, render."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from search.engine import DEFAULT_MODE, MODES, SearchEngine
from search.moments import DEFAULT_MERGE_GAP_S
from search.query import EmptyIndexError, SearchFilters, SearchQueryError, query_terms
from search.render import format_table, hits_to_json, render_html


def run_search(index: str, query: str, limit: int = 10, as_json: bool = False, *, mode: str = DEFAULT_MODE,
               filters: SearchFilters | None = None, min_score: float | None = None,
               merge_gap_s: float | None = DEFAULT_MERGE_GAP_S, html_out: str | None = None,
               embedding_model: str | None = None) -> str:
    """Search the index at ``index`` and render the moments as a table or JSON.

    With ``html_out`` the results page is also written there (local path). Raises
    ``FileNotFoundError`` if there is no index there, ``SearchQueryError`` for an unusable query,
    mode, limit or filter and ``EmptyIndexError`` if the index holds nothing searchable.
    """
    query_terms(query)  # a bad query is reported before the index is read
    if mode not in MODES:
        raise SearchQueryError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
    if limit < 1:
        raise SearchQueryError(f"the result limit must be at least 1, not {limit}")
    (filters or SearchFilters()).validate()
    engine = SearchEngine.open(index, embedding_model)
    if engine.num_rows == 0:
        raise EmptyIndexError(f"the index at {index} has no searchable segments (no video is committed there "
                              "yet, or none produced text)")
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
        return f"No segment matches {query!r} ({engine.num_rows} units searched)."
    return format_table(moments)
