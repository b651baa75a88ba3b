"""Organic feedback data: readers for each source format, the columnar dataset, the simulator."""
