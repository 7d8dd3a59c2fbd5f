"""Fixtures of the serving tests: one key of each scope in the test's store."""

from __future__ import annotations

import pytest

from loopline.serving.api_keys import create_key
from loopline.store import Store


@pytest.fixture
def keys(store: Store) -> dict[str, str]:
    """Tokens of two active keys: `predict` (scope predict) and `admin` (scope admin)."""
    with store.session() as session:
        predict = create_key(session, name="scorer", scopes=["predict"], actor="test")
        admin = create_key(session, name="operator", scopes=["admin"], actor="test")
    return {"predict": predict.token, "admin": admin.token}
