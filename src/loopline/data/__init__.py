"""Data sources, contracts, ingest and the demo-data generator."""
