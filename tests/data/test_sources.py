"""Sources: every supported format, folders, globs, DuckDB queries, encodings and delimiters
give the same curated rows; the same content under another name is never ingested twice."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from data_helpers import EVENT_COLUMNS, SPEC, Env, event, write_csv

from loopline.data.versions import read_version

ROWS = [event(300 + i) for i in range(6)]


def _typed() -> pl.DataFrame:
    frame = pl.DataFrame([{k: str(v) for k, v in r.items()} for r in ROWS])
    return frame.with_columns(
        pl.col("event_timestamp").str.to_datetime(time_zone="UTC"),
        pl.col("customer_id", "merchant_id", "hour").cast(pl.Int64),
        pl.col("amount").cast(pl.Float64),
    )


def _split_csv(d: Path) -> list[Path | str]:
    write_csv(d / "a" / "one.csv", ROWS[:3])
    write_csv(d / "a" / "two.csv", ROWS[3:])
    (d / "a" / ".partial.csv.tmp").write_text("ignored")
    return [d / "a"]


def _glob(d: Path) -> list[Path | str]:
    write_csv(d / "g" / "x1.csv", ROWS[:2])
    write_csv(d / "g" / "x2.csv", ROWS[2:])
    write_csv(d / "g" / "other.txt.bak", ROWS)
    return [str(d / "g" / "x*.csv")]


def _parquet(d: Path) -> list[Path | str]:
    d.mkdir(parents=True, exist_ok=True)
    _typed().write_parquet(d / "events.parquet")
    return [d / "events.parquet"]


def _parquet_naive_and_narrow(d: Path) -> list[Path | str]:
    d.mkdir(parents=True, exist_ok=True)
    frame = _typed().with_columns(
        pl.col("event_timestamp").dt.replace_time_zone(None).dt.cast_time_unit("ns"),
        pl.col("customer_id", "merchant_id").cast(pl.Int32),
        pl.col("merchant_category").cast(pl.Categorical),
    )
    frame.write_parquet(d / "events.parquet")
    return [d / "events.parquet"]


def _jsonl(d: Path) -> list[Path | str]:
    d.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({**r, "amount": float(str(r["amount"]))}) for r in ROWS]
    (d / "events.jsonl").write_text("\n".join(lines) + "\n")
    return [d / "events.jsonl"]


def _json_array(d: Path) -> list[Path | str]:
    d.mkdir(parents=True, exist_ok=True)
    (d / "events.json").write_text(json.dumps(ROWS))
    return [d / "events.json"]


def _latin1_semicolon(d: Path) -> list[Path | str]:
    return [write_csv(d / "events.csv", ROWS, delimiter=";", encoding="latin-1")]


def _tsv(d: Path) -> list[Path | str]:
    return [write_csv(d / "events.tsv", ROWS, delimiter="\t")]


FORMATS: dict[str, tuple[Callable[[Path], list[Path | str]], dict[str, object]]] = {
    "folder of CSV files": (_split_csv, {}),
    "glob": (_glob, {}),
    "Parquet": (_parquet, {}),
    "Parquet, naive ns timestamps, int32 and categorical": (_parquet_naive_and_narrow, {}),
    "JSON Lines": (_jsonl, {}),
    "JSON array": (_json_array, {}),
    "latin-1 with ';'": (_latin1_semicolon, {"delimiter": ";", "encoding": "latin-1"}),
    "tab-separated": (_tsv, {"delimiter": "\t"}),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_gives_the_same_rows(env: Env, name: str) -> None:
    make, dialect = FORMATS[name]
    paths = make(env.raw)
    fmt = SPEC.events.source.model_copy(update=dialect) if dialect else None
    result = env.ingest(SPEC.events, paths, fmt=fmt)
    assert (result.status, result.rows, result.rows_quarantined) == ("committed", 6, 0)
    _, table = read_version(env.store, SPEC.events.table)
    new = table.filter(pl.col("transaction_id").is_in([r["transaction_id"] for r in ROWS]))
    assert new.sort("transaction_id").equals(_typed().select(EVENT_COLUMNS))
    again = env.ingest(SPEC.events, paths, fmt=fmt)
    assert again.status == "noop" and again.files_skipped


def test_a_duckdb_query_is_a_source_and_rerunning_it_is_a_noop(env: Env) -> None:
    write_csv(env.raw / "q" / "a.csv", ROWS)
    sql = f"SELECT * FROM read_csv('{env.raw / 'q' / '*.csv'}', all_varchar = true)"
    result = env.ingest(SPEC.events, [], queries=[sql])
    assert (result.status, result.rows) == ("committed", 6)
    assert result.files_new[0].startswith("query:")
    assert env.ingest(SPEC.events, [], queries=[sql]).status == "noop"


def test_a_failing_query_is_a_clear_rejection(env: Env) -> None:
    from loopline.data.contracts import ContractError

    with pytest.raises(ContractError, match=r"column '\(query\)' breaks 'runs in DuckDB'"):
        env.ingest(SPEC.events, [], queries=["SELECT * FROM no_such_table"])


def test_same_content_under_new_names_is_skipped(env: Env) -> None:
    first = write_csv(env.raw / "day1.csv", ROWS)
    assert env.ingest(SPEC.events, [first]).rows == 6
    copy = env.raw / "renamed" / "day1-copy.csv"
    copy.parent.mkdir()
    copy.write_bytes(first.read_bytes())
    result = env.ingest(SPEC.events, [copy, first])
    assert result.status == "noop" and sorted(result.files_skipped) == ["day1-copy.csv", "day1.csv"]
