"""Feature layer: entity feature tables (Polars + NumPy), Feast declarations and helpers.

`windows` is the exact sliding-window engine (change-point rows, integer sums, incremental
updates equal to full recomputes); `aggregates` defines the fraud use case's tables on it
(fraud_v2) and the frozen daily snapshots (fraud_v1); `delta_tables` writes them as Delta
commits; `offline_store` is loopline's Feast offline store (sorted as-of joins); `feast_ops`
applies the repo, materializes, builds point-in-time training sets, reads online features and
checks skew and freshness; `transform` turns request fields plus Feast features into model
inputs, request-time inputs included, for training, batch scoring and online serving alike.
"""
