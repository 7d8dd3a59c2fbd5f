"""Feast declarations of the delivery use case: entities, sources, feature views, the service.

The tables behind the sources are written by the features stage from the builders in
`usecases.delivery.builders`; their columns must match the schemas below and the layout of
`delivery_v1` in the spec (`features.layouts`), which the tests check.

Paths are resolved from LOOPLINE_HOME when this file is imported (Feast reads them as given).
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


courier = Entity(
    name="courier",
    join_keys=["courier_id"],
    value_type=ValueType.INT64,
    description="A courier delivering orders.",
)

restaurant = Entity(
    name="restaurant",
    join_keys=["restaurant_id"],
    value_type=ValueType.INT64,
    description="A restaurant preparing orders.",
)

courier_activity_source = FileSource(
    name="courier_activity_source",
    path=_data_path("lake/courier_activity"),
    file_format=DeltaFormat(),
    timestamp_field="event_timestamp",
    description="Courier sliding windows written by usecases.delivery.builders.",
)

restaurant_activity_source = FileSource(
    name="restaurant_activity_source",
    path=_data_path("lake/restaurant_activity"),
    file_format=DeltaFormat(),
    timestamp_field="event_timestamp",
    description="Restaurant sliding windows written by usecases.delivery.builders.",
)

# A row stays valid until the next one; 14 days without a change (7 of them with empty windows)
# make the entity unknown.
courier_activity = FeatureView(
    name="courier_activity",
    entities=[courier],
    ttl=timedelta(days=14),
    schema=[
        Field(name="courier_orders_1h", dtype=Int64, description="Orders in the last hour."),
        Field(name="courier_orders_1d", dtype=Int64, description="Orders in the last day."),
        Field(name="courier_orders_7d", dtype=Int64, description="Orders in the last 7 days."),
        Field(name="courier_distance_mean_7d", dtype=Float64, description="Mean km, 7 days."),
        Field(name="courier_deliveries_7d", dtype=Int64, description="Deliveries, 7 days."),
        Field(name="courier_duration_mean_7d", dtype=Float64, description="Mean minutes, 7d."),
        Field(
            name="courier_last_activity_epoch_us",
            dtype=Int64,
            description="Time of the last order or delivery (epoch microseconds).",
        ),
    ],
    source=courier_activity_source,
    online=True,
    tags={"use_case": "delivery", "grain": "1m"},
)

restaurant_activity = FeatureView(
    name="restaurant_activity",
    entities=[restaurant],
    ttl=timedelta(days=14),
    schema=[
        Field(name="restaurant_orders_1h", dtype=Int64, description="Orders in the last hour."),
        Field(name="restaurant_orders_1d", dtype=Int64, description="Orders in the last day."),
        Field(name="restaurant_orders_7d", dtype=Int64, description="Orders in the last 7 days."),
        Field(name="restaurant_items_1h", dtype=Int64, description="Items in the last hour."),
        Field(name="restaurant_distinct_couriers_7d", dtype=Int64, description="Couriers, 7 days."),
        Field(name="restaurant_deliveries_7d", dtype=Int64, description="Deliveries, 7 days."),
        Field(name="restaurant_duration_mean_1d", dtype=Float64, description="Mean minutes, 1d."),
        Field(name="restaurant_duration_mean_7d", dtype=Float64, description="Mean minutes, 7d."),
    ],
    source=restaurant_activity_source,
    online=True,
    tags={"use_case": "delivery", "grain": "1m"},
)

delivery_v1 = FeatureService(
    name="delivery_v1",
    features=[courier_activity, restaurant_activity],
    description="Inputs of the delivery-duration model, version 1.",
    tags={"use_case": "delivery", "version": "1"},
)
