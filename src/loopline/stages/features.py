"""The features stage: feature tables from the curated events, Feast apply, materialize."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from loopline.lake import tables
from loopline.settings import Settings
from loopline.spec import UseCaseSpec
from loopline.stages.common import builder, latest, open_context, record_version


def run_features(
    settings: Settings, spec: UseCaseSpec, *, flow_run_id: str | None = None
) -> dict[str, Any]:
    """Compute the feature tables from the curated events, register them with Feast, and
    materialize them to the online store."""
    from loopline.features import feast_ops

    ctx = open_context(settings, spec)
    events_version = latest(ctx, spec.events.table)
    with ctx.run(
        "features", flow_run_id=flow_run_id, params={"events_version": events_version.table_version}
    ) as run:
        events = tables.read(events_version.uri, events_version.table_version)
        as_of = events.get_column(spec.events.timestamp).max()
        assert isinstance(as_of, datetime)
        end = as_of + timedelta(days=1)
        summary: dict[str, Any] = {"as_of": as_of.isoformat()}
        for table in spec.features.tables:
            frame = builder(table.builder)(events, as_of=end)
            uri = tables.table_uri(settings.lake_dir, table.name)
            version = tables.overwrite(uri, frame, metadata={"run_id": run.run_id})
            record_version(
                ctx, dataset=table.name, frame=frame, uri=uri, version=version, run_id=run.run_id
            )
            feast_ops.publish_feature_table(frame, settings.features_dir / f"{table.name}.parquet")
            summary[table.name] = {"rows": frame.height, "table_version": version}
        store = feast_ops.open_store(settings)
        feast_ops.apply_repo(store)
        feast_ops.materialize(store, end=end)
        run.log_metrics({f"{t.name}_rows": summary[t.name]["rows"] for t in spec.features.tables})
        run.set_summary(**summary)
    summary["run_id"] = run.run_id
    return summary
