"""whylogs profiles of Polars frames, and their bytes for the artifact store.

A profile is a mergeable summary of a frame (counts, types, KLL quantile sketches, frequent
items) that is small whatever the row count; drift is computed between two profiles, never
between raw frames, so a reference can be kept forever and windows can be merged.

whylogs' anonymous usage statistics are switched off (`WHYLOGS_NO_ANALYTICS`) before whylogs is
imported: loopline runs offline and must not call out from a monitoring job.
"""

from __future__ import annotations

import os

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "1")

import polars as pl
import whylogs as why
from whylogs.core import DatasetProfileView

MEDIA_TYPE = "application/x-whylogs"


def profile_frame(frame: pl.DataFrame) -> DatasetProfileView:
    """Profile every column of a frame (whylogs has no Polars input: converted via pandas).

    Nulls in float columns arrive as NaN and are counted as nulls, not as values.
    """
    return why.log(pandas=frame.to_pandas()).view()


def serialize(view: DatasetProfileView) -> bytes:
    """The profile as bytes (whylogs' own protobuf format)."""
    return view.serialize()


def deserialize(data: bytes) -> DatasetProfileView:
    """A profile from the bytes `serialize` wrote.

    Raises:
        ValueError: the bytes are not a whylogs profile.
    """
    try:
        return DatasetProfileView.deserialize(data)
    except Exception as exc:  # whylogs raises protobuf and its own errors
        raise ValueError(f"not a whylogs profile: {type(exc).__name__}: {exc}") from exc
