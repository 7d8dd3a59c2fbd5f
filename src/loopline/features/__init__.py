"""Feature stage: windowed aggregates (DuckDB), the one model-input transform, and Feast helpers.

`aggregates` turns curated transactions into daily entity snapshots, `feast_ops` publishes them to
Feast and reads training sets and online features back, and `transform` turns request fields plus
Feast features into model inputs for training, batch scoring and online serving alike.
"""
