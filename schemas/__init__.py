"""Configs (pydantic, frozen), records that flow through the pipeline, and pyarrow table schemas."""
