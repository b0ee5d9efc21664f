"""Write the Parquet index: one folder per run, files listed by a ``_SUCCESS`` marker written last."""

from transforms.write.layout import (
    SUCCESS_MARKER,
    complete_runs,
    indexed_video_ids,
    read_current,
    read_index_table,
    run_folder,
    write_success,
)
from transforms.write.parquet import WriteTable

__all__ = ["SUCCESS_MARKER", "WriteTable", "complete_runs", "indexed_video_ids", "read_current", "read_index_table",
           "run_folder", "write_success"]
