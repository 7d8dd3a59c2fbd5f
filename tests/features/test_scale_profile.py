"""The scale profile's feature store against the servers on loopback: the shipped
`feature_store.scale.yaml` with a PostgreSQL registry (a fresh schema) and the Redis online store
(a fresh Feast project), through the same helpers as the embedded profile."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from feature_data import START, labels_of, transactions, write_tables

from loopline.features.feast_ops import (
    EntityNotFoundError,
    apply_repo,
    materialize,
    online_features,
    open_store,
    redis_connection_string,
    skew_report,
    training_set,
    watermarks,
)
from loopline.settings import Settings

pytestmark = pytest.mark.scale
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_project() -> Iterator[str]:
    """A Feast project name no other test uses; its Redis keys are deleted afterwards."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis on 127.0.0.1:6379 is required in CI: {exc}")
        pytest.skip("Redis on 127.0.0.1:6379 is not running")
    project = f"ll_{uuid.uuid4().hex[:10]}"
    yield project
    stale = [key for key in client.scan_iter(count=1000) if project.encode() in key]
    if stale:
        client.delete(*stale)
    client.close()


def test_scale_profile_applies_materializes_and_serves(
    tmp_path, monkeypatch, pg_schema, redis_project
):
    import redis

    monkeypatch.delenv("LOOPLINE_HOME", raising=False)
    for name in ("LOOPLINE_FEAST_REGISTRY_URL", "LOOPLINE_FEAST_REDIS", "LOOPLINE_FEAST_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(
        home=tmp_path / "home",
        feast_yaml="feature_store.scale.yaml",
        feast_project=redis_project,
        redis_url=REDIS_URL,
        feast_registry_url=(
            f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{pg_schema}"
        ),
    )
    tx = transactions(seed=51, n=600)
    write_tables(settings, tx, labels_of(tx))
    end = START + timedelta(days=40)

    store = open_store(settings)
    assert type(store.registry).__name__ == "SqlRegistry"
    assert store.config.online_store.type == "redis"
    assert store.project == redis_project
    apply_repo(store)
    materialize(store, end=end)
    assert set(watermarks(store).values()) == {end}

    # Another process (a fresh store on the same servers) sees the same registry and values.
    other = open_store(settings)
    rows = [{"customer_id": 5, "merchant_id": 2}]
    assert online_features(other, rows, "fraud_v2") == online_features(store, rows, "fraud_v2")
    with pytest.raises(EntityNotFoundError, match="customer_id=777"):
        online_features(other, [{"customer_id": 777, "merchant_id": 2}], "fraud_v2")
    for service in ("fraud_v1", "fraud_v2"):
        report = skew_report(other, service, sample=50)
        assert report.mismatches == 0 and set(report.not_found_online.values()) == {0}
    frame = training_set(other, tx.select("customer_id", "merchant_id", "event_timestamp"),
                         "fraud_v2").frame  # fmt: skip
    assert frame["cust_txn_count_30d"].null_count() < frame.height

    keys = [k for k in redis.Redis.from_url(REDIS_URL).scan_iter(count=1000)
            if redis_project.encode() in k]  # fmt: skip
    assert keys, "the online rows live in Redis under the project"
    store.teardown()
    leftover = [k for k in redis.Redis.from_url(REDIS_URL).scan_iter(count=1000)
                if redis_project.encode() in k]  # fmt: skip
    assert leftover == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "127.0.0.1:6379,db=0"),
        ("redis://cache.internal", "cache.internal:6379"),
        ("redis://:s3cret@cache:6380/2", "cache:6380,db=2,password=s3cret"),
        ("rediss://cache:6390", "cache:6390,ssl=true"),
    ],
)
def test_redis_urls_become_feast_connection_strings(url, expected):
    assert redis_connection_string(url) == expected


@pytest.mark.parametrize("url", ["http://cache:6379", "cache:6379", "redis://"])
def test_bad_redis_urls_are_refused(url):
    with pytest.raises(ValueError, match="redis_url: must look like redis://host:port/db"):
        redis_connection_string(url)
