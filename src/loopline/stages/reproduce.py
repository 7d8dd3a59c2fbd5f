"""Reproduce a training run: retrain from what it recorded and compare the model file's hash.

A train run records its use-case spec (artifact `spec`), its LightGBM params and seed, the
Delta versions of the events, labels and every feature source it read, the hash of the
point-in-time training set, the git commit, the lock hash and the package versions. Training is
deterministic (one thread, LightGBM's deterministic mode), so the same inputs must give the same
model bytes. A mismatch is reported with what differs: data (training-set hash, versions),
code (commit, uncommitted changes), the dependency lock, package versions.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from loopline.settings import Settings
from loopline.spec import UseCaseSpec
from loopline.stages.common import StageError, open_context
from loopline.store.db import Store
from loopline.store.tables import Run, RunArtifact
from loopline.tracking import environment_info, git_state, lock_hash


def _recorded(settings: Settings, run_id: str) -> tuple[Run, dict[str, str]]:
    store = Store.open(settings)
    try:
        with store.reader() as session:
            run = session.get(Run, run_id)
            if run is None:
                raise StageError(f"run_id: no run '{run_id}'")
            if run.kind != "train":
                raise StageError(f"run_id: run '{run_id}' is a {run.kind} run, not a train run")
            if run.status != "succeeded":
                raise StageError(
                    f"run_id: run '{run_id}' {run.status}; only a finished training reproduces"
                )
            artifacts = {
                a.name: a.artifact_id
                for a in session.query(RunArtifact).filter_by(run_id=run_id).all()
            }
            session.expunge(run)
    finally:
        store.dispose()
    for name in ("spec", "model"):
        if name not in artifacts:
            raise StageError(f"run '{run_id}' recorded no '{name}' artifact: cannot reproduce it")
    return run, artifacts


def _differences(run: Run, settings: Settings, data: dict[str, Any]) -> dict[str, Any]:
    """What differs between the original run's environment and this one."""
    differences: dict[str, Any] = {}
    if not data["training_set_matches"]:
        differences["data"] = {
            "training_set_hash": {
                "recorded": data["recorded_hash"],
                "now": data["rebuilt_hash"],
            }
        }
    git = git_state(settings.project_dir)
    commit = git.commit if git else None
    if commit != run.git_commit or (git is not None and git.dirty) or run.git_dirty:
        differences["code"] = {
            "recorded_commit": run.git_commit,
            "recorded_dirty": run.git_dirty,
            "commit": commit,
            "dirty": git.dirty if git else None,
        }
    lock = lock_hash(settings.project_dir)
    if lock != run.lock_hash:
        differences["lock"] = {"recorded": run.lock_hash, "now": lock}
    recorded_packages = dict((run.environment or {}).get("packages", {}))
    packages = environment_info()["packages"]
    changed = {
        name: {"recorded": recorded_packages.get(name), "now": packages.get(name)}
        for name in sorted(set(recorded_packages) | set(packages))
        if recorded_packages.get(name) != packages.get(name)
    }
    if changed:
        differences["packages"] = changed
    return differences


def run_reproduce(settings: Settings, run_id: str, *, flow_run_id: str | None = None) -> dict:
    """Retrain a past train run from its record and compare the model's sha256.

    Returns:
        {"run_id", "reproduce_run_id", "reproduced" (hashes equal), "recorded_model",
        "model" (the new hash), "training_set_matches", "differences"}.

    Raises:
        StageError: the run does not exist, is not a succeeded train run, or lacks its record.
    """
    from loopline.lake import tables
    from loopline.stages.train import build_inputs
    from loopline.training.model import train_booster
    from loopline.training.prepare import prepare

    run, artifacts = _recorded(settings, run_id)
    ctx_probe = open_context(settings, _load_spec_artifact(settings, artifacts["spec"]))
    spec = ctx_probe.spec
    lineage = dict(run.summary.get("lineage") or {})
    views = lineage.get("feature_views") or {}
    feature_versions = {v["source"]: v.get("source_version") for v in views.values()}
    params = run.params or {}
    with ctx_probe.run(
        "reproduce",
        flow_run_id=flow_run_id,
        params={"of_run": run_id},
        tags={"reproduces": run_id},
        name=f"reproduce {run_id}",
    ) as handle:
        inputs = build_inputs(
            ctx_probe,
            events_version=params.get("events_version"),
            labels_version=params.get("labels_version"),
            feature_versions=feature_versions,
        )
        recorded_hash = (lineage.get("training_set") or {}).get("frame_hash")
        rebuilt_hash = tables.frame_hash(inputs.training_set)
        prepared = prepare(inputs.training_set, spec)
        model = train_booster(
            prepared.x_train,
            prepared.y_train,
            prepared.x_valid,
            prepared.y_valid,
            feature_names=prepared.feature_names,
            config=spec.training,
            task=spec.task,
            num_class=prepared.num_class,
            overrides=params.get("overrides") or None,
        )
        new_hash = "sha256:" + hashlib.sha256(model.to_bytes()).hexdigest()
        data = {
            "training_set_matches": recorded_hash == rebuilt_hash,
            "recorded_hash": recorded_hash,
            "rebuilt_hash": rebuilt_hash,
        }
        result = {
            "run_id": run_id,
            "reproduce_run_id": handle.run_id,
            "reproduced": new_hash == artifacts["model"],
            "recorded_model": artifacts["model"],
            "model": new_hash,
            "training_set_matches": data["training_set_matches"],
            "differences": _differences(run, settings, data),
        }
        handle.set_summary(**result)
    return result


def _load_spec_artifact(settings: Settings, artifact_id: str) -> UseCaseSpec:
    from loopline.lake.artifacts import ArtifactStore

    raw = json.loads(ArtifactStore(settings.artifacts_dir).get_bytes(artifact_id))
    return UseCaseSpec.model_validate(raw)
