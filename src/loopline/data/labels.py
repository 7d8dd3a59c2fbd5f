"""Delayed labels: joined to their events by key, as of a point in time.

Labels (for example chargebacks, days after the transaction) arrive as their own batches into
their own versioned table, with the same contract machinery as events; their contract refers to
the events table by key, so a label for an unknown event, or one dated before its event, is
quarantined. This module joins the two for analysis and training.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from loopline.spec import UseCaseSpec


def join_labels(
    events: pl.DataFrame,
    labels: pl.DataFrame,
    spec: UseCaseSpec,
    *,
    as_of: datetime | None = None,
) -> pl.DataFrame:
    """Events with their label and label time, joined by the labels' key.

    Args:
        events: Curated events (a recorded version).
        labels: Curated labels (a recorded version).
        spec: The use case: key, label column and timestamps.
        as_of: Only labels known at this time count (`label_timestamp <= as_of`); default all.

    Returns:
        Every event, with the label columns null where no label is known (yet). When a key has
        several labels, the newest known one wins.
    """
    label_key, event_key = join_keys(spec)
    label_ts = spec.labels.timestamp
    known = labels if as_of is None else labels.filter(pl.col(label_ts) <= as_of)
    newest = known.sort(label_ts).unique(label_key, keep="last", maintain_order=True)
    picked = newest.select(label_key, spec.labels.column, label_ts)
    return events.join(
        picked, left_on=event_key, right_on=label_key, how="left", maintain_order="left"
    )


def join_keys(spec: UseCaseSpec) -> tuple[str, str]:
    """(label column, event column) the two tables join on.

    The labels' reference to the events table when declared, else the labels' `id` (a column
    of the same name in the events).

    Raises:
        ValueError: the labels declare neither.
    """
    for ref in spec.labels.contract.references:
        if ref.table == spec.events.table:
            return ref.column, ref.target_key
    if spec.labels.id and spec.labels.id in spec.events.columns:
        return spec.labels.id, spec.labels.id
    raise ValueError(
        f"labels '{spec.labels.table}' need a reference to '{spec.events.table}' or an id "
        "column the events share, to be joined"
    )
