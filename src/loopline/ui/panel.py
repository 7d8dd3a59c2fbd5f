"""Streamlit glue for the control panel: one cached Store per URL, cached queries, shared bits.

The entry point (`app/main.py`) builds `Settings()` and calls `install(settings)`; pages call
`current_panel()` and read through `panel.query(queries.some_query, **params)` (the metadata
store) or `panel.read(some_read)` (a function of the settings: the feature store). Results are
cached per store URL (or settings), query and arguments for `TTL_S` seconds, so a page shows
data at most that old and a rerun (a filter change) costs no database round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import polars as pl
import streamlit as st
from sqlalchemy.engine import make_url

from loopline.settings import Settings
from loopline.spec import SpecError, load_spec
from loopline.store.db import Store

T = TypeVar("T")

TTL_S = 15
_SESSION_KEY = "loopline.panel"
TIME_FORMAT = "YYYY-MM-DD HH:mm"


@st.cache_resource(show_spinner=False)
def _open_store(url: str, _settings: Settings) -> Store:
    # Keyed by URL only: one engine (and one schema upgrade) per store per server process.
    return Store.open(_settings)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _cached_query(
    name: str,
    url: str,
    params: tuple[tuple[str, Any], ...],
    _query: Callable[..., Any],
    _store: Store,
) -> Any:
    return _query(_store, **dict(params))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _cached_read(
    name: str,
    settings_json: str,
    params: tuple[tuple[str, Any], ...],
    _read: Callable[..., Any],
    _settings: Settings,
) -> Any:
    return _read(_settings, **dict(params))


def _frozen(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(
        sorted((k, tuple(v) if isinstance(v, list | tuple) else v) for k, v in params.items())
    )


@dataclass(frozen=True)
class Panel:
    """What a page needs: the settings, the store, and cached read access to it."""

    settings: Settings
    store: Store

    def query(self, query: Callable[..., T], **params: Any) -> T:
        """Run `query(store, **params)` through the data cache (lists count as tuples)."""
        key = f"{query.__module__}.{query.__qualname__}"
        return _cached_query(key, self.settings.metadata_url, _frozen(params), query, self.store)

    def read(self, read: Callable[..., T], **params: Any) -> T:
        """Run `read(settings, **params)` through the data cache: for what lives outside the
        store (the feature store, the lake), keyed by the whole settings and the params."""
        key = f"{read.__module__}.{read.__qualname__}"
        return _cached_read(
            key, self.settings.model_dump_json(), _frozen(params), read, self.settings
        )

    @property
    def primary_metric(self) -> str | None:
        """The use case's primary metric, or None if its spec cannot be loaded."""
        try:
            return load_spec(self.settings.use_case).primary_metric
        except SpecError:
            return None


def store_label(settings: Settings) -> str:
    """The metadata store's URL with any password hidden."""
    return make_url(settings.metadata_url).render_as_string(hide_password=True)


def install(settings: Settings) -> Panel:
    """Open the store for this session (cached per URL) and make it the pages' panel.

    If the store cannot be opened the page shows why and stops, instead of a traceback.
    """
    try:
        store = _open_store(settings.metadata_url, settings)
    except Exception as exc:  # any driver or migration error: show it, do not crash the UI
        st.error(f"Cannot open the metadata store at `{store_label(settings)}`: {exc}")
        st.stop()
    panel = Panel(settings=settings, store=store)
    st.session_state[_SESSION_KEY] = panel
    st.sidebar.caption(f"Store: `{store_label(settings)}`")
    return panel


def current_panel() -> Panel:
    """The panel `install` set up for this session (pages run only through app/main.py)."""
    panel = st.session_state.get(_SESSION_KEY)
    if panel is None:
        raise RuntimeError("no panel installed: start the app with `streamlit run app/main.py`")
    return panel


def nothing_yet(what: str) -> None:
    """The friendly empty-state message every page shows instead of an empty view."""
    st.info(f"Nothing yet: {what}. Run `loopline up` to start the loop.", icon=":material/eco:")


def column_config(frame: pl.DataFrame) -> dict[str, Any]:
    """Display formats by dtype: minutes for timestamps, seconds for `*_s`, else 4 decimals."""
    config: dict[str, Any] = {}
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.Datetime):
            config[name] = st.column_config.DatetimeColumn(name, format=TIME_FORMAT)
        elif dtype == pl.Float64 and name.endswith("_s"):
            config[name] = st.column_config.NumberColumn(name, format="%.1f s")
        elif dtype == pl.Float64:
            config[name] = st.column_config.NumberColumn(name, format="%.4f")
    return config


def table(frame: pl.DataFrame, **kwargs: Any) -> None:
    """`st.dataframe` with the panel's column formats and no index."""
    st.dataframe(frame, column_config=column_config(frame), hide_index=True, **kwargs)


def when(value: Any) -> str:
    """A timestamp as the panel writes it in prose (UTC, minutes), or an em dash."""
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "—"
