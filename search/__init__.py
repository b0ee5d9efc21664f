"""Search an index by action: query parsing, the derived search index, ranking, moments, rendering.

Importing this package loads neither Beam nor torch: queries are embedded in numpy
(``core.text_embedding``), and the Parquet index is read through ``index.read``.

- ``search.query``: terms, tokenizer, filters, query errors
- ``search.units``: segment rows -> searchable units (events as moments, unparsed answers left out)
- ``search.text_index``: the per-part inverted index (BM25 statistics summed over parts)
- ``search.store``: the derived index on disk, ``sync`` (incremental) and ``open_store`` (lazy)
- ``search.engine``: keyword / semantic / hybrid ranking
- ``search.moments``: hits merged into moments
- ``search.render``: table, JSON, thumbnails, HTML page
- ``search.run``: ``search_moments`` (the CLI's and the server's one ranking call) and ``run_search`` (the CLI's)
- ``search.server``: ``plm-index serve``, the local web app (imported only by that command)
"""

from search.engine import DEFAULT_MODE, MODES, SearchEngine
from search.moments import DEFAULT_MERGE_GAP_S, Moment, SearchHit, merge_hits
from search.query import EmptyIndexError, SearchFilters, SearchQueryError
from search.run import run_search, search_moments
from search.store import SyncReport, open_store, sync

__all__ = ["DEFAULT_MERGE_GAP_S", "DEFAULT_MODE", "MODES", "EmptyIndexError", "Moment", "SearchEngine",
           "SearchFilters", "SearchHit", "SearchQueryError", "SyncReport", "merge_hits", "open_store", "run_search",
           "search_moments", "sync"]
