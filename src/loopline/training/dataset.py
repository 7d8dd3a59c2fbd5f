"""Labelled events: which events have a known label as of a point in time."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from loopline.spec import UseCaseSpec


def labelled_events(
    events: pl.DataFrame, labels: pl.DataFrame, spec: UseCaseSpec, *, as_of: datetime
) -> pl.DataFrame:
    """Events whose label was settled at `as_of`, with the label attached.

    A label counts only once its label timestamp has passed (chargebacks arrive late). Only
    events older than the label delay are used, positives included: keeping the early
    positives of recent events without their negatives would inflate the fraud rate of the
    newest rows, which are the holdout. Events in the first `training.warmup_days` of the
    data are left out too: their windowed features are still filling up, so they look unlike
    anything served later.
    """
    ev, lab = spec.events, spec.labels
    assert ev.id is not None and lab.id is not None
    if events.is_empty():
        return events.with_columns(pl.lit(None, pl.Int64).alias(lab.column))
    known = labels.filter(pl.col(lab.timestamp) <= as_of).select(
        pl.col(lab.id).alias(ev.id), pl.col(lab.column)
    )
    horizon = as_of - timedelta(days=lab.delay_days)
    first = events.get_column(ev.timestamp).min()
    assert isinstance(first, datetime)
    warm = first + timedelta(days=spec.training.warmup_days)
    settled = (pl.col(ev.timestamp) <= horizon) & (pl.col(ev.timestamp) >= warm)
    return events.filter(settled).join(known, on=ev.id, how="inner").sort(ev.timestamp, ev.id)
