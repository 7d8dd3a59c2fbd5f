"""Prefect events for registry changes, so other flows and automations can react to them.

Each committed change (a promotion, a rollback, a promotion request and its decision) is sent
as a Prefect event about the model, `loopline.model.<name>`, after its transaction committed.
Sending never breaks or undoes the change: any failure is logged as a warning.

Prefect's `emit_event` starts a throwaway local server when no API is configured, and retries a
dead one for seconds at process exit. So an event is sent only when a Prefect API is configured
(`PREFECT_API_URL`), and, outside a flow or task run, only when that API answers on its port;
otherwise nothing is sent (a flow run's events always go: its API is the one running it).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

MODEL_PROMOTED = "loopline.model.promoted"
MODEL_ROLLED_BACK = "loopline.model.rolled_back"
PROMOTION_REQUESTED = "loopline.promotion.requested"
PROMOTION_REJECTED = "loopline.promotion.rejected"
PROMOTION_STALE = "loopline.promotion.stale"
PROMOTION_EXPIRED = "loopline.promotion.expired"
EVENTS = frozenset(
    {
        MODEL_PROMOTED,
        MODEL_ROLLED_BACK,
        PROMOTION_REQUESTED,
        PROMOTION_REJECTED,
        PROMOTION_STALE,
        PROMOTION_EXPIRED,
    }
)
"""Every event name this module sends."""

_CONNECT_TIMEOUT_S = 0.5


def model_resource(model_name: str, alias: str, use_case: str | None = None) -> dict[str, str]:
    """The Prefect resource an event is about: the model, labelled with the alias moved."""
    resource = {
        "prefect.resource.id": f"loopline.model.{model_name}",
        "prefect.resource.name": model_name,
        "loopline.alias": alias,
    }
    if use_case:
        resource["loopline.use-case"] = use_case
    return resource


def version_resource(model_name: str, version: int, role: str) -> dict[str, str]:
    """A related resource: one model version, in a role (`to`, `from`)."""
    return {
        "prefect.resource.id": f"loopline.model.{model_name}.version.{version}",
        "prefect.resource.role": role,
        "prefect.resource.name": f"{model_name}@{version}",
    }


def _in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def _answers(api_url: str) -> bool:
    """Whether something accepts connections where the Prefect API should be."""
    parts = urlsplit(api_url)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=_CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def _destination() -> str | None:
    """Where events would go, or None when they should not be sent (see the module doc)."""
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    if not api_url:
        return None
    if _in_prefect_run() or _answers(api_url):
        return str(api_url)
    logger.warning("Prefect API %s does not answer: registry event not sent", api_url)
    return None


def emit(
    event: str,
    *,
    model_name: str,
    alias: str,
    payload: Mapping[str, Any],
    to_version: int | None = None,
    from_version: int | None = None,
    use_case: str | None = None,
) -> bool:
    """Send one registry event to Prefect; never raises.

    Args:
        event: one of `EVENTS`.
        payload: what happened (from, to, actor, reason, override, ...); plain JSON values.
        to_version: the version the change is about (a related resource).
        from_version: the version it replaced (a related resource).

    Returns:
        Whether the event was handed to Prefect (False: no API configured or reachable, or
        sending failed; the reason is logged).
    """
    try:
        if _destination() is None:
            logger.debug("no Prefect API configured: %s for %s not sent", event, model_name)
            return False
        from prefect.events import emit_event

        related = [
            version_resource(model_name, number, role)
            for number, role in ((to_version, "to"), (from_version, "from"))
            if number is not None
        ]
        sent = emit_event(
            event=event,
            resource=model_resource(model_name, alias, use_case),
            related=related,
            payload=dict(payload),
        )
        if sent is None:
            logger.warning("Prefect did not take event %s for %s", event, model_name)
        return sent is not None
    except Exception as exc:  # an event must never undo or fail a committed change
        logger.warning("could not send event %s for %s: %s", event, model_name, exc)
        return False
