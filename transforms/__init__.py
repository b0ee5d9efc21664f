"""PTransforms and DoFns, one folder per pipeline stage."""
