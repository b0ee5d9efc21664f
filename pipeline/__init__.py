"""The plm-index CLI, its options and the pipeline graph."""
