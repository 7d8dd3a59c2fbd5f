"""The demo stage: write the fraud demo's raw files (history plus a day of live traffic)."""

from __future__ import annotations

from datetime import UTC, datetime

from loopline.settings import Settings


def write_demo_data(
    settings: Settings,
    *,
    days: int,
    customers: int,
    seed: int,
    drift_start_day: int | None = None,
    end: datetime | None = None,
) -> tuple[int, int]:
    """Generate the demo and write `days` days of history plus one more day of live traffic
    (`<home>/raw/live/transactions.csv`, for `loopline replay`). Returns (history, live) rows.

    With `end`, the demo is moved in time to end there: its live day is the day before `end`
    and its history ends a day before that, so replaying the live day is present traffic.
    Without it, the simulated calendar (from 2026-01-01) is kept, as tests that want fixed
    dates need.
    """
    from loopline.data.demo import (
        DemoConfig,
        anchor_demo,
        generate_demo,
        split_live,
        write_demo,
        write_live,
    )

    config = DemoConfig(
        days=days + 1, customers=customers, seed=seed, drift_start_day=drift_start_day
    )
    data = generate_demo(config)
    if end is not None:
        data = anchor_demo(data, end)
    history, live = split_live(data, end=end)
    write_live(live, settings.raw_dir)
    write_demo(history, settings.raw_dir)  # its manifest last: present only when complete
    return history.transactions.height, live.height


def ensure_demo_data(settings: Settings, *, days: int, customers: int, seed: int) -> bool:
    """Write the demo's raw files under the data home unless they are there; True if written.

    The demo is anchored at now: its history ends a day ago and its live day is the last one.
    """
    from loopline.data.demo import demo_present

    if demo_present(settings.raw_dir):
        return False
    write_demo_data(settings, days=days, customers=customers, seed=seed, end=datetime.now(UTC))
    return True
