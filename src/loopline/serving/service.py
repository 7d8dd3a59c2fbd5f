"""The prediction service: which model answers, features, scoring, logging, folding, shadow.

`PredictionService` holds what the routes need for the life of the process: one `ModelCache`
per serving alias (champion, the spec's canary and shadow aliases), the online features, the
prediction log and the shadow worker. Its methods are what the routes call; the rules are:

- The champion answers, unless a canary version is set: then a sticky share of the traffic
  (`serving.canary_share`, by a hash of `serving.sticky_key`) goes to the canary.
- Every answered prediction is logged before it is returned; a prediction that cannot be logged
  is refused (503), never answered untraceable.
- An event scored by entity keys is folded into the online features before it is valued: it is
  valued at the start of its grain tile, which it is not in, so it never sees itself, and every
  row of a batch sees the earlier rows, as the offline join does. A request with a full
  feature payload is scored as given and folded nowhere. Bad input (4xx) is refused before
  anything is folded; an event folded and then refused by the log (503) stays folded (it
  happened) and lands with the others.
- A shadow version scores the same events on a worker thread after the response is computed,
  logged with role "shadow" and never returned; when its queue is full the shadow scoring is
  skipped and counted, so it never slows the answer down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loopline.features.feast_ops import service_layout
from loopline.registry.models import CHAMPION
from loopline.serving.model_cache import LoadedModel, ModelCache
from loopline.serving.online import FeaturesUnavailable, OnlineFeatures, ServedFeatures
from loopline.serving.prediction_log import PredictionLog, PredictionLogError
from loopline.serving.schemas import ServedModel
from loopline.serving.scoring import (
    Event,
    InputTransform,
    Scored,
    bucket,
    log_record,
    payload_features,
    score_many,
)
from loopline.spec import UseCaseSpec
from loopline.store.tables import utcnow

log = logging.getLogger(__name__)

SHADOW_QUEUE = 1_000


class ServiceUnavailable(RuntimeError):
    """The service cannot answer now (no champion, no features, log refusing); HTTP 503."""


@dataclass
class ShadowStats:
    """Counters of the shadow worker."""

    queued: int = 0
    scored: int = 0
    skipped: int = 0
    errors: int = 0


class PredictionService:
    """Everything a prediction needs, opened once per process."""

    def __init__(
        self,
        spec: UseCaseSpec,
        *,
        caches: dict[str, ModelCache],
        online: OnlineFeatures,
        prediction_log: PredictionLog,
        transform: InputTransform,
    ) -> None:
        """Args:
        spec: The use case.
        caches: Role ("champion", "canary", "shadow") -> the cache following its alias.
        online: Request features.
        prediction_log: Where every prediction goes.
        transform: The shared transform (`loopline.features.transform`).
        """
        self.spec = spec
        self.caches = caches
        self.online = online
        self.log = prediction_log
        self.transform = transform
        self.sticky_key = spec.serving.sticky_key or spec.entity_keys[0]
        self._shadow_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
        self._shadow_lock = threading.Lock()
        self.shadow_stats = ShadowStats()

    # -- models ------------------------------------------------------------------------------

    def model(self, role: str) -> LoadedModel | None:
        """The version serving a role now, or None."""
        cache = self.caches.get(role)
        return cache.current() if cache is not None else None

    def champion(self) -> LoadedModel:
        """The champion, or ServiceUnavailable saying why there is none."""
        cache = self.caches[CHAMPION]
        model = cache.current()
        if model is None:
            if cache.last_error:
                reason = f"loading it failed: {cache.last_error}"
            else:
                reason = f"model '{cache.model_name}' has no version with alias '{cache.alias}'"
            raise ServiceUnavailable(
                f"no {cache.alias} yet: {reason}; train and promote one (`loopline promote`)"
            )
        return model

    def route(self, event: Event) -> tuple[LoadedModel, str]:
        """The model that answers an event and its role (sticky by the entity's hash)."""
        champion = self.champion()
        canary = self.model("canary")
        share = self.spec.serving.canary_share
        if (
            canary is not None
            and canary.version_id != champion.version_id
            and bucket(event.fields.get(self.sticky_key), self.spec.model_name) < share
        ):
            return canary, "canary"
        return champion, "champion"

    def refresh(self) -> None:
        """Re-read every alias; swap in moved versions."""
        for cache in self.caches.values():
            cache.refresh()

    def served_models(self) -> list[ServedModel]:
        """The versions the service answers or shadows with now."""
        out = []
        for role, cache in self.caches.items():
            model = cache.current()
            if model is None:
                continue
            champion = self.model(CHAMPION)
            if (
                role == "canary"
                and champion is not None
                and champion.version_id == model.version_id
            ):
                continue
            out.append(
                ServedModel(
                    role=role,  # type: ignore[arg-type]
                    alias=model.alias,
                    model_name=model.model_name,
                    version=model.version,
                    model_version_id=model.version_id,
                    feature_service=model.feature_service,
                    loaded_at=model.loaded_at,
                    share=self.spec.serving.canary_share if role == "canary" else None,
                )
            )
        return out

    # -- scoring -----------------------------------------------------------------------------

    def predict(self, events: Sequence[Event], *, received_at: datetime) -> list[Scored]:
        """Fold events in, value and score them in order, log them, queue the shadow; the answers.

        Raises:
            RequestError: a full feature payload does not match the model's service.
            ServiceUnavailable: no champion, features unreadable, or the log refused.
            ScoringError: the model could not be fed.
        """
        started = time.perf_counter()
        routed = [(event, *self.route(event)) for event in events]
        for event, model, _ in routed:
            if event.payload is not None:  # checked for every row before anything happens
                payload_features(event, self.spec, model.feature_service)
        # Folded first: an event is valued at the start of its grain tile, which it is not in,
        # so this changes nothing for it, and a concurrent later request sees it sooner.
        keyed = [event.row(self.spec) for event in events if event.payload is None]
        if keyed:
            self.online.fold(keyed)
        items = [(event, self._features(event, model), model, role)
                 for event, model, role in routed]  # fmt: skip
        scored = self._score_grouped(items)
        latency = (time.perf_counter() - started) * 1e3 / max(1, len(events))
        records = [log_record(s, self.spec, received_at=received_at, latency_ms=latency)
                   for s in scored]  # fmt: skip
        try:
            self.log.append_many(records)  # all or nothing: a full spool refuses the batch
        except (PredictionLogError, OSError) as exc:
            log.exception("prediction log write failed")
            raise ServiceUnavailable(f"prediction log refused the prediction: {exc}") from exc
        self._queue_shadow(items)
        return scored

    def push(self, events: Sequence[Event]) -> int:
        """Fold events that are not scored into the online features; how many."""
        self.online.fold([e.row(self.spec) for e in events])
        return len(events)

    def _features(self, event: Event, model: LoadedModel) -> ServedFeatures:
        if event.payload is not None:
            return payload_features(event, self.spec, model.feature_service)
        layout = service_layout(model.feature_service, self.spec)
        try:
            return self.online.features(event.fields, event.at, model.feature_service,
                                        layout.views)  # fmt: skip
        except FeaturesUnavailable as exc:
            raise ServiceUnavailable(str(exc)) from exc
        except ValueError:
            raise
        except Exception as exc:
            log.exception("feature lookup failed")
            raise ServiceUnavailable(
                f"feature lookup failed for service '{model.feature_service}': {exc}"
            ) from exc

    def _score_grouped(
        self, items: Sequence[tuple[Event, ServedFeatures, LoadedModel, str]]
    ) -> list[Scored]:
        """One transform and booster call per model; results in the input order."""
        order: dict[tuple[str, str], list[int]] = {}
        for i, (_, _, model, role) in enumerate(items):
            order.setdefault((model.version_id, role), []).append(i)
        out: list[Scored | None] = [None] * len(items)
        for indices in order.values():
            model, role = items[indices[0]][2], items[indices[0]][3]
            pairs = [(items[i][0], items[i][1]) for i in indices]
            for i, scored in zip(indices, score_many(model, pairs, self.spec, self.transform,
                                                     role=role), strict=True):  # fmt: skip
                out[i] = scored
        return [s for s in out if s is not None]

    # -- shadow ------------------------------------------------------------------------------

    def _queue_shadow(
        self, items: Sequence[tuple[Event, ServedFeatures, LoadedModel, str]]
    ) -> None:
        shadow = self.model("shadow")
        if shadow is None:
            return
        with self._shadow_lock:
            if self.shadow_pending() >= SHADOW_QUEUE:
                self.shadow_stats.skipped += len(items)
                return
            self.shadow_stats.queued += 1
        work = [(event, served, model.feature_service) for event, served, model, _ in items]
        self._shadow_pool.submit(self._shadow, shadow, work, utcnow())

    def _shadow(
        self,
        shadow: LoadedModel,
        work: list[tuple[Event, ServedFeatures, str]],
        at: datetime,
    ) -> None:
        try:
            started = time.perf_counter()
            ready = []
            layout = service_layout(shadow.feature_service, self.spec)
            for event, served, service in work:
                if event.payload is None and service != shadow.feature_service:
                    # Valued at the event's time: events folded since do not count.
                    served = self.online.features(
                        event.fields, event.at, shadow.feature_service, layout.views
                    )
                ready.append((event, served))
            scored = score_many(shadow, ready, self.spec, self.transform, role="shadow")
            latency = (time.perf_counter() - started) * 1e3 / max(1, len(ready))
            self.log.append_many(
                [log_record(item, self.spec, received_at=at, latency_ms=latency) for item in scored]
            )
            with self._shadow_lock:
                self.shadow_stats.scored += 1
        except Exception:
            log.exception("shadow scoring failed")
            with self._shadow_lock:
                self.shadow_stats.errors += 1

    def shadow_pending(self) -> int:
        """Shadow batches queued and not done."""
        s = self.shadow_stats
        return s.queued - s.scored - s.errors

    def close(self) -> None:
        """Finish queued shadow work."""
        self._shadow_pool.shutdown(wait=True, cancel_futures=False)

    def health(self) -> dict[str, Any]:
        """Counters for /health."""
        stats = getattr(self.log, "stats", None)
        log_stats: dict[str, Any] = {}
        if callable(stats):
            value = stats()
            log_stats = value.__dict__ if hasattr(value, "__dict__") else dict(value)
        online = dict(self.online.stats.__dict__)
        return {"prediction_log": log_stats, "online": online,
                "shadow": dict(self.shadow_stats.__dict__)}  # fmt: skip
