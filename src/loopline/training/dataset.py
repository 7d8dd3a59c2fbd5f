"""Labelled events: which events have a known label as of a point in time."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from loopline.spec import UseCaseSpec


def labelled_events(
    events: pl.DataFrame, labels: pl.DataFrame, spec: UseCaseSpec, *, as_of: datetime
) -> pl.DataFrame:
    """Events whose label was known at `as_of`, with the label attached.

    A label counts only once its label timestamp has passed (chargebacks arrive late), and an
    event younger than the label delay is left out even if a label row exists, so training sees
    what a real system would have seen at `as_of`.
    """
    ev, lab = spec.events, spec.labels
    assert ev.id is not None and lab.id is not None
    known = labels.filter(pl.col(lab.timestamp) <= as_of).select(
        pl.col(lab.id).alias(ev.id), pl.col(lab.column)
    )
    horizon = as_of - timedelta(days=lab.delay_days)
    mature_or_positive = (pl.col(ev.timestamp) <= horizon) | (pl.col(lab.column) == 1)
    return (
        events.join(known, on=ev.id, how="inner")
        .filter(mature_or_positive)
        .sort(ev.timestamp, ev.id)
    )
