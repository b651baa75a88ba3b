"""Organic feedback data: readers for each source format, the columnar dataset (the simulator that writes
logs to read is its own package, ``rlhf_organic.simulator``)."""

# The ingest formats, here (not in readers/) so the CLI and recipes can name them without importing
# pyarrow; tests check this list against the reader registry.
INPUT_FORMATS = ("auto", "bb3x", "preference", "kto", "messages")
