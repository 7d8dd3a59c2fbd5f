"""Feast declarations for the fraud use case: entities, sources, feature views, services.

Only declarations live here. The tables behind the sources are computed by
`loopline.features.aggregates` and written by the features stage; their columns must match the
schemas below (and `loopline.features.feast_ops.SERVICES`, which the tests check).

Feature services are versions. A released service never changes: `service_versions.json`
records the definition hash of each of its views, and applying a repo in which a released view
changed is refused. A changed feature set is a new view and a new service (fraud_v3), while
models trained on an older service stay pinned to it and keep being served.

Paths are resolved from LOOPLINE_HOME when this file is imported: Feast's offline stores read
`FileSource.path` as given, without expanding variables or resolving it against the repo.
"""

import os
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_format import DeltaFormat
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


# --- fraud_v2: exact sliding windows (1h, 1d, 7d, 30d), change-point rows -----------------------

# Customer windows; a row at T describes the transactions in [T - w, T), to the minute. Written
# incrementally as a Delta table by loopline.features.aggregates.customer_activity.
customer_activity_source = FileSource(
    name="customer_activity_source",
    path=_data_path("lake/customer_activity"),
    file_format=DeltaFormat(),
    timestamp_field="event_timestamp",
    description="Customer sliding windows written by loopline.features.aggregates.",
)

# Merchant windows and chargebacks; labels count from the instant they arrived.
merchant_activity_source = FileSource(
    name="merchant_activity_source",
    path=_data_path("lake/merchant_activity"),
    file_format=DeltaFormat(),
    timestamp_field="event_timestamp",
    description="Merchant sliding windows written by loopline.features.aggregates.",
)


def _windows(template: str, dtype, description: str, windows: tuple[str, ...]) -> list[Field]:
    return [
        Field(name=template.format(w=w), dtype=dtype, description=description.format(w=w))
        for w in windows
    ]


# A row stays valid until the next one; after 90 days without a change the customer counts as
# unknown (its windows have been empty for 60 days by then).
customer_activity = FeatureView(
    name="customer_activity",
    entities=[customer],
    ttl=timedelta(days=90),
    schema=[
        *_windows(
            "cust_txn_count_{w}", Int64, "Transactions in the last {w}.", ("1h", "1d", "7d", "30d")
        ),
        *_windows(
            "cust_amount_sum_{w}",
            Float64,
            "Amount spent in the last {w}.",
            ("1h", "1d", "7d", "30d"),
        ),
        *_windows(
            "cust_amount_mean_{w}", Float64, "Mean amount in the last {w}.", ("1d", "7d", "30d")
        ),
        *_windows(
            "cust_amount_std_{w}",
            Float64,
            "Amount standard deviation, last {w}.",
            ("1d", "7d", "30d"),
        ),
        *_windows(
            "cust_distinct_merchants_{w}",
            Int64,
            "Distinct merchants in the last {w}.",
            ("1d", "7d", "30d"),
        ),
        Field(
            name="cust_last_txn_epoch_us",
            dtype=Int64,
            description="Time of the last transaction (epoch microseconds).",
        ),
    ],
    source=customer_activity_source,
    online=True,
    tags={"use_case": "fraud", "grain": "1m"},
)

# Merchant activity and chargebacks over sliding windows.
merchant_activity = FeatureView(
    name="merchant_activity",
    entities=[merchant],
    ttl=timedelta(days=90),
    schema=[
        *_windows(
            "merch_txn_count_{w}", Int64, "Transactions in the last {w}.", ("1h", "1d", "7d", "30d")
        ),
        *_windows("merch_amount_mean_{w}", Float64, "Mean amount in the last {w}.", ("7d", "30d")),
        Field(
            name="merch_amount_std_30d",
            dtype=Float64,
            description="Amount standard deviation, last 30d.",
        ),
        *_windows(
            "merch_distinct_customers_{w}",
            Int64,
            "Distinct customers in the last {w}.",
            ("1d", "30d"),
        ),
        *_windows(
            "merch_fraud_labels_{w}",
            Int64,
            "Fraud labels that arrived in the last {w}.",
            ("7d", "30d"),
        ),
        Field(
            name="merch_labels_30d",
            dtype=Int64,
            description="Labels (fraud or not) that arrived in the last 30d.",
        ),
        Field(
            name="merch_fraud_rate_30d",
            dtype=Float64,
            description="Fraud share of the labels that arrived in the last 30d.",
        ),
    ],
    source=merchant_activity_source,
    online=True,
    tags={"use_case": "fraud", "grain": "1m"},
)

# Version 2 of the fraud model inputs: sliding windows, recency, merchant chargebacks.
fraud_v2 = FeatureService(
    name="fraud_v2",
    features=[customer_activity, merchant_activity],
    description="Inputs of the fraud detector, version 2.",
    tags={"use_case": "fraud", "version": "2"},
)
