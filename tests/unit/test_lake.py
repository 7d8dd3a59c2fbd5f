"""Lake tables (Delta versions, DuckDB over Arrow) and the content-addressed artifact store."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from loopline.lake import tables
from loopline.lake.artifacts import ArtifactError, ArtifactStore


def _frame(start: int, n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": list(range(start, start + n)),
            "ts": [datetime(2026, 1, 1, tzinfo=UTC)] * n,
            "amount": [float(i) for i in range(n)],
        }
    )


def test_each_append_is_a_new_version_and_old_versions_read_back(tmp_path: Path) -> None:
    uri = tables.table_uri(tmp_path, "events")
    assert tables.current_version(uri) is None
    first, second = _frame(0, 3), _frame(3, 2)
    assert tables.append(uri, first) == 0
    assert tables.append(uri, second) == 1
    assert tables.read(uri, 0).equals(first)
    assert tables.read(uri).sort("id").equals(pl.concat([first, second]))


def test_duckdb_queries_a_version_through_arrow(tmp_path: Path) -> None:
    uri = tables.table_uri(tmp_path, "events")
    tables.append(uri, _frame(0, 3))
    tables.append(uri, _frame(3, 4))
    old = tables.query("SELECT count(*) AS n FROM ev", {"ev": (uri, 0)})
    new = tables.query("SELECT count(*) AS n FROM ev", {"ev": (uri, None)})
    assert (old.item(), new.item()) == (3, 7)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (pl.col("amount").cast(pl.Utf8), "'amount' changes type from Float64 to String"),
        (pl.col("id").cast(pl.Int32), "'id' changes type from Int64 to Int32"),
    ],
)
def test_type_change_is_refused_and_leaves_the_table_unchanged(
    tmp_path: Path, change: pl.Expr, message: str
) -> None:
    uri = tables.table_uri(tmp_path, "events")
    tables.append(uri, _frame(0, 3))
    with pytest.raises(tables.LakeError, match=message):
        tables.append(uri, _frame(3, 1).with_columns(change))
    assert tables.current_version(uri) == 0


def test_dropped_column_is_refused_and_added_column_accepted(tmp_path: Path) -> None:
    uri = tables.table_uri(tmp_path, "events")
    tables.append(uri, _frame(0, 3))
    with pytest.raises(tables.LakeError, match="'amount' is missing"):
        tables.append(uri, _frame(3, 1).drop("amount"))
    assert tables.append(uri, _frame(3, 1).with_columns(extra=pl.lit("x"))) == 1
    assert tables.read(uri).get_column("extra").null_count() == 3


@pytest.mark.parametrize("name", ["../escape", "a/b", "Upper", "", "x" * 80, "1abc"])
def test_table_names_cannot_be_paths(tmp_path: Path, name: str) -> None:
    with pytest.raises(tables.LakeError, match="table name"):
        tables.table_uri(tmp_path, name)


@pytest.mark.parametrize("version", [-1, 5])
def test_reading_a_missing_version_names_it(tmp_path: Path, version: int) -> None:
    uri = tables.table_uri(tmp_path, "events")
    tables.append(uri, _frame(0, 1))
    with pytest.raises(tables.LakeError, match=f"no version {version}"):
        tables.read(uri, version)


def test_frame_hash_depends_on_content_only(tmp_path: Path) -> None:
    assert tables.frame_hash(_frame(0, 3)) == tables.frame_hash(_frame(0, 3))
    assert tables.frame_hash(_frame(0, 3)) != tables.frame_hash(_frame(1, 3))


def test_artifacts_are_content_addressed_and_deduplicated(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "a")
    first = store.put_bytes(b"model")
    assert first == store.put_bytes(b"model")
    assert first.startswith("sha256:") and len(first) == 71
    assert store.get_bytes(first) == b"model"
    source = tmp_path / "f.bin"
    source.write_bytes(b"model")
    assert store.put_file(source) == first
    assert not list((tmp_path / "a" / "tmp").iterdir())


@pytest.mark.parametrize(
    "bad_id",
    ["../../etc/passwd", "sha256:../../x", "sha256:" + "g" * 64, "md5:" + "a" * 64, "", "sha256:"],
)
def test_malformed_artifact_ids_never_touch_the_disk(tmp_path: Path, bad_id: str) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(ArtifactError, match="artifact id must look like"):
        store.get_bytes(bad_id)


def test_tampered_artifact_is_detected(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    artifact_id = store.put_bytes(b"original")
    path = store.path(artifact_id)
    os.chmod(path, 0o644)
    path.write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="altered"):
        store.get_bytes(artifact_id)
