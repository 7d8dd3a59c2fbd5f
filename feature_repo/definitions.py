"""Feast declarations for the fraud use case: entities, sources, feature views, services.

Only declarations live here. The tables behind the sources are computed by
`loopline.features.aggregates` and published by `loopline.features.feast_ops`; their columns must
match the schemas below (and `loopline.features.feast_ops.SERVICES`, which the tests check).

Paths are resolved from LOOPLINE_HOME when this file is imported: Feast's DuckDB offline store
reads `FileSource.path` as given, without expanding variables or resolving it against the repo.
"""

import os
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64


def _data_path(relative: str) -> str:
    home = os.environ.get("LOOPLINE_HOME")
    if not home:
        raise RuntimeError("LOOPLINE_HOME is not set: the feature repo needs the data home")
    return os.path.join(home, relative)


# A card holder; keyed by the customer_id of each transaction.
customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.INT64,
    description="A card holder.",
)

# A merchant accepting card payments; keyed by the merchant_id of each transaction.
merchant = Entity(
    name="merchant",
    join_keys=["merchant_id"],
    value_type=ValueType.INT64,
    description="A merchant accepting card payments.",
)

# Daily customer snapshots; event_timestamp is the end of the day each row summarises.
customer_features_source = FileSource(
    name="customer_features_source",
    path=_data_path("features/customer_stats.parquet"),
    timestamp_field="event_timestamp",
    description="Daily customer snapshots written by loopline.features.aggregates.",
)

# Daily merchant snapshots; event_timestamp is the end of the day each row summarises.
merchant_features_source = FileSource(
    name="merchant_features_source",
    path=_data_path("features/merchant_stats.parquet"),
    timestamp_field="event_timestamp",
    description="Daily merchant snapshots written by loopline.features.aggregates.",
)

# Customer behaviour over calendar-day windows ending on the snapshot day.
customer_stats = FeatureView(
    name="customer_stats",
    entities=[customer],
    ttl=timedelta(days=30),
    schema=[
        Field(name="cust_txn_count_1d", dtype=Int64, description="Transactions that day."),
        Field(name="cust_txn_count_7d", dtype=Int64, description="Transactions in 7 days."),
        Field(name="cust_amount_sum_7d", dtype=Float64, description="Amount spent in 7 days."),
        Field(name="cust_amount_mean_30d", dtype=Float64, description="Mean amount, 30 days."),
        Field(name="cust_amount_max_30d", dtype=Float64, description="Largest amount, 30 days."),
        Field(name="cust_online_share_30d", dtype=Float64, description="Online share, 30 days."),
        Field(name="cust_distinct_countries_30d", dtype=Int64, description="Countries, 30 days."),
    ],
    source=customer_features_source,
    online=True,
    tags={"use_case": "fraud"},
)

# Merchant activity over calendar-day windows ending on the snapshot day.
merchant_stats = FeatureView(
    name="merchant_stats",
    entities=[merchant],
    ttl=timedelta(days=30),
    schema=[
        Field(name="merch_txn_count_7d", dtype=Int64, description="Transactions in 7 days."),
        Field(name="merch_amount_mean_30d", dtype=Float64, description="Mean amount, 30 days."),
        Field(name="merch_online_share_30d", dtype=Float64, description="Online share, 30 days."),
    ],
    source=merchant_features_source,
    online=True,
    tags={"use_case": "fraud"},
)

# Version 1 of the fraud model inputs; a changed feature set gets a new service (fraud_v2).
fraud_v1 = FeatureService(
    name="fraud_v1",
    features=[customer_stats, merchant_stats],
    description="Inputs of the fraud detector, version 1.",
    tags={"use_case": "fraud", "version": "1"},
)
