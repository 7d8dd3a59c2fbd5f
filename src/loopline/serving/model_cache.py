"""The champion in memory: loaded once, re-checked cheaply, swapped atomically on promotion.

`ModelCache.current()` never touches the database: it returns the snapshot loaded last. A
refresher (the API runs one every `refresh_s` seconds) calls `refresh()`, which reads the alias
row by primary key (one cheap query) and only when the alias revision moved loads the new
booster through the registry's verified path (`registry.package.load_version`: package hash,
size and tree limits, signature against the registry; a refusal is audited). The new snapshot
replaces the old one with a single reference assignment, so a request in flight finishes on
the model it started with and no request ever sees a half-loaded model. A failed load keeps
the old model serving and records the error.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime

import lightgbm as lgb

from loopline.lake.artifacts import ArtifactStore
from loopline.registry.models import CHAMPION, get_alias
from loopline.registry.package import load_version
from loopline.store import Store
from loopline.store.tables import utcnow

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model version could not be turned into a usable booster."""


@dataclass(frozen=True)
class LoadedModel:
    """An immutable snapshot of one served model version."""

    model_name: str
    alias: str
    version: int
    version_id: str
    revision: int
    feature_service: str
    inputs: tuple[str, ...]
    artifact_id: str
    booster: lgb.Booster
    loaded_at: datetime
    package_id: str | None = None


def load_booster(model_text: bytes, inputs: tuple[str, ...]) -> lgb.Booster:
    """A booster from LightGBM model text, checked against the inputs the registry recorded.

    Raises:
        ModelLoadError: the text is not a LightGBM model or its feature names differ.
    """
    try:
        booster = lgb.Booster(model_str=model_text.decode())
    except (lgb.basic.LightGBMError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"not a LightGBM text model: {exc}") from exc
    names = tuple(booster.feature_name())
    if names != inputs:
        raise ModelLoadError(
            f"model feature names {list(names)} differ from the registered inputs {list(inputs)}"
        )
    return booster


class ModelCache:
    """Holds the model an alias points at, for one registered model name."""

    def __init__(
        self,
        store: Store,
        artifacts: ArtifactStore,
        model_name: str,
        *,
        alias: str = CHAMPION,
    ) -> None:
        self._store = store
        self._artifacts = artifacts
        self.model_name = model_name
        self.alias = alias
        self._current: LoadedModel | None = None
        self._refresh_lock = threading.Lock()
        self.checked_at: datetime | None = None
        self.last_error: str | None = None

    def current(self) -> LoadedModel | None:
        """The snapshot to serve with; None while the alias is not set. No I/O."""
        return self._current

    def refresh(self) -> LoadedModel | None:
        """Re-read the alias; load and swap in its model if the revision moved.

        Concurrent callers do not pile up: while one refresh runs, others return the current
        snapshot at once. Errors (database busy, missing or corrupt artifact) are logged and
        kept in `last_error`; the previous snapshot keeps serving.
        """
        if not self._refresh_lock.acquire(blocking=False):
            return self._current
        try:
            self._refresh()
        except Exception as exc:  # keep serving the old model whatever went wrong
            error = f"{type(exc).__name__}: {exc}"
            if error != self.last_error:  # log a lasting failure once, not every interval
                log.exception("refreshing the %s of %s failed", self.alias, self.model_name)
            self.last_error = error
        finally:
            self._refresh_lock.release()
        return self._current

    def _refresh(self) -> None:
        with self._store.reader() as session:
            target = get_alias(session, self.model_name, self.alias)
            if target is None:
                found = None
            else:
                mv = target.model_version
                found = (
                    mv.id,
                    target.revision,
                    mv.version,
                    mv.artifact_id,
                    mv.feature_service,
                    tuple(mv.feature_names.get("inputs", [])),
                    mv,
                )
        self.checked_at = utcnow()
        if found is None:
            # An alias can be deleted; stop serving what it no longer names.
            if self._current is not None:
                log.warning("alias %s of %s is gone", self.alias, self.model_name)
            self._current = None
            self.last_error = None
            return
        version_id, revision, version, artifact_id, feature_service, inputs, row = found
        current = self._current
        if (
            current is not None
            and current.version_id == version_id
            and current.revision == revision
        ):
            return
        if current is not None and current.version_id == version_id:
            booster = current.booster  # the alias moved but came back to the loaded version
        else:
            # Detached row: its columns were loaded in the session above.
            booster = load_version(self._store, self._artifacts, row, actor="serving").booster
        self._current = LoadedModel(
            model_name=self.model_name,
            alias=self.alias,
            version=version,
            version_id=version_id,
            revision=revision,
            feature_service=feature_service,
            inputs=inputs,
            artifact_id=artifact_id,
            booster=booster,
            loaded_at=utcnow(),
            package_id=row.package_id,
        )
        self.last_error = None
        log.info(
            "serving %s version %s (%s revision %s)", self.model_name, version, self.alias, revision
        )
