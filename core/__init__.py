"""RankLoop's base layer: the canonical schema, the settings model and its parts (``core.config``),
errors and exit codes, the atomic writer, the Parquet opener for streamed reads (``core.parquet``),
the code version, and the process set-up for Prefect and MLflow (``core.runtime``).

Every other package imports from here; nothing here imports any other package of RankLoop
(``tests/core/test_layers.py`` checks both in fresh interpreters).
"""
