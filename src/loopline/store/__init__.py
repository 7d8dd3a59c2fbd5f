"""Metadata store: tables, engine and sessions, migrations."""

from loopline.store.db import Store, make_engine

__all__ = ["Store", "make_engine"]
