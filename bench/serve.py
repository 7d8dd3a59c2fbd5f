"""Benchmark: loopline's prediction service under closed-loop load against `feast serve`.

Builds the fraud demo anchored at now in a temporary data home (--days of history x
--customers, seed 11: ingest, features, train, promote; the live day is the last 24 h), then
starts two servers on 127.0.0.1 over the same feature repo and SQLite online store:

- loopline: `uvicorn loopline.serving.app:create_app --factory --workers 1` (LOOPLINE_* env),
- Feast: `feast -c <repo> serve --workers 1 --no-access-log --max-requests 0` (Feast's env;
  `--max-requests 0` because the default, 1000, restarts the only gunicorn worker every
  ~1000 requests, which would put the restart into Feast's p99).

`wrk` (Debian's; one thread, --connections keep-alive connections, closed loop, a Lua script
feeding pre-built bodies in order) drives, for --warmup then --seconds each:

1. loopline `POST /predict`, one live event per request with its own event_timestamp: fresh
   windowed features valued at the event's time, the model, the prediction log, the fold;
2. Feast `POST /get-online-features` for the `fraud_v2` service and the same entities;
3. loopline `POST /predict/batch` with --batch-rows rows per request (a batch that wrk's window
   cuts off still finishes; the server-side rate, every row until the last one is logged, is
   reported beside wrk's);
4. --sequential seconds of `/predict` on one connection (latency without queueing, and parity
   without requests in flight on other connections).

Between phases the script waits until the service's counters stop moving.

The live day holds only ~0.5 events per customer (about 1,000 at 2,000 customers), a few
seconds of load. So the traffic is one stream of new events in strict time order over the live
day (after the history's end, before now): the live events cycled (pass p sends live event i
again as `<id>-p<p>`, same entities and request fields), evenly spaced in time, `hour` set from
the new time. Sized for --max-rps; each event is sent at most once. The stream is denser than
the demo's traffic (more events per entity and hour), but a run adds only a few percent to an
entity's 30-day history, which a request's cost grows with. The warm-up slices come first in
time, then /predict, then the batch rows, then the sequential phase.
In time order, the offline point-in-time join of the landed events sees what the service had
seen, except for events still in flight on another connection (same entity, earlier minute).

After the load the service is stopped (its lifespan flush lands the served events as raw
files), the landed events are ingested, the features rebuilt, and `run_served_skew` compares
--parity-sample logged requests with the point-in-time offline values: `checked` features and
`mismatches` (the RESULT's `parity_*`), and each phase's requests separately
(`parity_by_phase`; request ids carry the phase). With --profile N (default 300), N more
events are then scored in-process through `PredictionService.predict` under cProfile (the
app's lifespan run by Starlette's TestClient) and the top of the profile printed.

Targets (issue 15): loopline's /predict p99 no higher than Feast's p99 at the same load, and
at least 1,000 predictions/s (a /predict/batch row counts as a prediction; `predictions_per_s`
is the better of the two modes, /predict alone is `predict_rps`).

    .venv/bin/python bench/serve.py --customers 2000 --connections 4 --seconds 30

The last line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import math
import os
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

SERVICE = "fraud_v2"
# Request ids start with serve<tag>-: the phase that sent them (parity is reported per phase).
PHASE_TAGS = {"predict warm-up": "W", "predict": "P", "batch warm-up": "V", "batch": "B",
              "sequential": "S", "sequential warm-up": "T", "shadow warm-up": "X",
              "shadow": "H", "shadow sequential": "Y",
              "shadow sequential warm-up": "Z"}  # fmt: skip

# One wrk thread; bodies fed in order from a file (one JSON per line). Without "wrap" the thread
# stops after the last body (each event is sent once); with it the file is cycled (reads).
WRK_SCRIPT = r"""
local bodies, n, i, wrap, path = {}, 0, 0, false, "/"
local headers = {["Content-Type"] = "application/json"}
function init(args)
  path = args[1]
  wrap = args[3] == "wrap"
  for line in io.lines(args[2]) do
    n = n + 1
    bodies[n] = line
  end
end
function request()
  i = i + 1
  if i > n then
    if wrap then i = 1 else return wrk.format("GET", "/health") end
  end
  return wrk.format("POST", path, headers, bodies[i])
end
function response(status, hdrs, body)
  if not wrap and i >= n then wrk.thread:stop() end  -- each body once, then stop
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "status_errors": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "p999_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""


def _progress(message: str) -> None:
    print(f"[serve] {message}", file=sys.stderr, flush=True)


def _uptime() -> str:
    out = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    return out.split("load average:")[-1].strip() if "load average" in out else out.strip()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the data home -------------------------------------------------------------------------


def build_home(settings: Any, spec: Any, *, days: int, customers: int) -> tuple[datetime, int]:
    """The demo anchored at now, ingested, featurised, trained and promoted."""
    from loopline.stages import run_features, run_ingest, run_promote, run_train
    from loopline.stages.demo import write_demo_data

    now = datetime.now(UTC)
    history, live = write_demo_data(settings, days=days, customers=customers, seed=11, end=now)
    _progress(f"demo: {history:,} history events, {live:,} live events")
    run_ingest(settings, spec)
    run_features(settings, spec)
    trained = run_train(settings, spec)
    if trained.get("gates_passed") is True:
        promoted = run_promote(settings, spec)
    else:  # small demos can miss a gate; the benchmark needs a champion, not a good one
        failed = trained.get("evaluation", {})
        _progress(f"gates failed; promoting by override for the benchmark ({failed})")
        roles = spec.promotion.approver_roles
        promoted = run_promote(settings, spec, override=True, reason="bench/serve.py",
                               role=roles[0] if roles else None)  # fmt: skip
    if promoted.get("promoted") is not True:
        raise RuntimeError(f"promotion refused: {promoted}")
    return now, live


def live_bodies(settings: Any, spec: Any, now: datetime) -> list[dict[str, Any]]:
    """Every live event as a /predict body, in time order (request_bodies, moved to now)."""
    from loopline.data.contracts import read_batch
    from loopline.data.demo import LIVE_DIR
    from loopline.serving.traffic import request_bodies

    live = read_batch(settings.raw_dir / LIVE_DIR / "transactions.csv", spec.events)
    return request_bodies(live, spec, n=live.height, seed=0, now=now)


def timeline(
    base: list[dict[str, Any]], spec: Any, *, start: datetime, end: datetime, total: int
) -> list[dict[str, Any]]:
    """`total` new events in strict time order over (start, end): the live events cycled
    (pass p sends live event i again as `<id>-p<p>`), each at an evenly spaced time with the
    `hour` request field set from it. In time order, so the offline point-in-time join of the
    landed events sees exactly what the service had seen (see the docstring)."""
    ts, event_id = spec.events.timestamp, spec.events.id
    step = (end - start) / (total + 1)
    out = []
    for n in range(total):
        p, i = divmod(n, len(base))
        body = base[i]
        at = start + step * (n + 1)
        item = {**body, ts: at.isoformat(), event_id: f"{body[event_id]}-p{p}"}
        if "hour" in item:
            item["hour"] = at.hour
        item["request_id"] = f"serve-{body[event_id]}-p{p}"[:64]
        out.append(item)
    return out


# -- servers -------------------------------------------------------------------------------


@contextlib.contextmanager
def server(argv: list[str], env: dict[str, str], url: str, log_path: Path, name: str):
    """A server process; yields it once `url` answers 200; SIGTERM (then SIGKILL) on exit."""
    log = log_path.open("wb")
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: {log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield process
    finally:
        stop(process)
        log.close()


def stop(process: subprocess.Popen, grace: float = 60) -> int | None:
    """SIGTERM, wait for the graceful shutdown (the lifespan flush), SIGKILL if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


# -- load ----------------------------------------------------------------------------------


def wrk(
    url: str, path: str, bodies: Path, *, connections: int, seconds: float, wrap: bool, work: Path
) -> dict[str, Any]:
    """One closed-loop wrk run; its counts, latency percentiles (ms) and requests/s."""
    script = work / "feed.lua"
    if not script.exists():
        script.write_text(WRK_SCRIPT)
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, math.ceil(seconds))}s",
            "--timeout", "60s", "-s", str(script), url, "--", path, str(bodies),
            "wrap" if wrap else "once"]  # fmt: skip
    load_before = _uptime()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 120)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    duration = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "seconds": round(duration, 2),
        "rps": round(raw["requests"] / duration, 2),
        "p50_ms": round(raw["p50_us"] / 1e3, 2),
        "p90_ms": round(raw["p90_us"] / 1e3, 2),
        "p99_ms": round(raw["p99_us"] / 1e3, 2),
        "p999_ms": round(raw["p999_us"] / 1e3, 2),
        "max_ms": round(raw["max_us"] / 1e3, 2),
        "mean_ms": round(raw["mean_us"] / 1e3, 2),
        "errors": {
            k: raw[k]
            for k in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts")
            if raw[k]
        },
        "load": f"{load_before} -> {_uptime()}",
    }


def shadow_alias(settings: Any, spec: Any, url: str, timeout_s: float = 30) -> None:
    """Point the shadow alias at the champion's version; wait until the service follows."""
    from loopline.registry.models import CHAMPION, get_alias, set_alias
    from loopline.store import Store

    store = Store.open(settings)
    try:
        with store.session() as session:
            champion = get_alias(session, spec.model_name, CHAMPION)
            assert champion is not None
            version = champion.model_version.version
            current = get_alias(session, spec.model_name, spec.serving.shadow_alias)
            set_alias(session, model_name=spec.model_name, alias=spec.serving.shadow_alias,
                      version=version, expected_revision=current.revision if current else None,
                      actor="bench/serve.py", action="set")  # fmt: skip
    finally:
        store.dispose()
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{url}/health", timeout=10).json().get("shadow") != version:
        if time.monotonic() > deadline:
            raise RuntimeError("the service did not pick up the shadow alias")
        time.sleep(0.2)


def settle(url: str, quiet_s: float = 1.0, timeout_s: float = 300) -> dict[str, Any]:
    """Wait until the service has finished the requests a wrk run left in flight (its
    counters stop moving); its /health then."""
    deadline = time.monotonic() + timeout_s
    last: tuple[Any, ...] | None = None
    changed = time.perf_counter()
    while True:
        health = httpx.get(f"{url}/health", timeout=60).json()
        now = (health["online"]["events_folded"], health["prediction_log"]["appended"])
        if now != last:
            changed = time.perf_counter()
        elif time.monotonic() > deadline or now == last:
            return {**health, "_last_change": changed}
        last = now
        time.sleep(quiet_s)


def parity_by_phase(settings: Any, spec: Any, *, limit: int) -> dict[str, dict[str, Any]]:
    """Served-vs-offline parity of each phase's logged requests (up to `limit` each): checked,
    mismatches, mismatches per view, requests with any mismatch."""
    import polars as pl

    from loopline.features import feast_ops
    from loopline.features.served_skew import served_skew
    from loopline.serving.prediction_log import read_prediction_log

    logged = read_prediction_log(settings.prediction_log_dir)
    store = feast_ops.open_store(settings)
    out: dict[str, dict[str, Any]] = {}
    for phase, tag in PHASE_TAGS.items():
        rows = logged.filter(pl.col("request_id").str.starts_with(f"serve{tag}-"))
        if rows.is_empty():
            continue
        if rows.height > limit:
            rows = rows.sample(n=limit, seed=0).sort("ts")
        report = served_skew(store, rows, spec).as_dict()
        views: dict[str, int] = {}
        for feature in report["features"]:
            views[feature["view"]] = views.get(feature["view"], 0) + feature["mismatches"]
        out[phase] = {
            "requests": report["requests"],
            "checked": report["checked"],
            "mismatches": report["mismatches"],
            "mismatches_by_view": {v: n for v, n in views.items() if n},
        }
    return out


def write_lines(path: Path, items: Iterator[Any]) -> int:
    n = 0
    with path.open("w") as out:
        for item in items:
            out.write(json.dumps(item, separators=(",", ":")))
            out.write("\n")
            n += 1
    return n


def chunked(items: Iterator[dict], size: int) -> Iterator[dict]:
    rows: list[dict] = []
    for item in items:
        rows.append(item)
        if len(rows) == size:
            yield {"rows": rows}
            rows = []


# -- profile -------------------------------------------------------------------------------


def profile(settings: Any, spec: Any, bodies: list[dict[str, Any]], top: int = 25) -> str:
    """cProfile of `PredictionService.predict` for single events, in this thread (the app's
    lifespan run by Starlette's TestClient; the background flushers are not in it)."""
    from fastapi.testclient import TestClient

    from loopline.serving.app import create_app
    from loopline.serving.schemas import prediction_request_model
    from loopline.serving.scoring import event_of

    model = prediction_request_model(spec)
    app = create_app(settings, refresh_s=600)
    with TestClient(app) as client:
        service = app.state.service

        def one(body: dict[str, Any]) -> None:
            now = datetime.now(UTC)
            event = event_of(model.model_validate(body), spec, now=now,
                             request_id=body["request_id"])  # fmt: skip
            service.predict([event], received_at=now)

        for body in bodies[:20]:  # warm
            one(body)
        rest = bodies[20:]
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for body in rest:
            one(body)
        profiler.disable()
        wall = time.perf_counter() - started
        # The HTTP path for comparison (routing, validation, response), unprofiled.
        http_bodies = [{**b, "request_id": b["request_id"] + "h",
                        spec.events.id: b[spec.events.id] + "h"} for b in rest[-50:]]  # fmt: skip
        started = time.perf_counter()
        for body in http_bodies:
            client.post("/predict", json=body).raise_for_status()
        http_ms = (time.perf_counter() - started) / len(http_bodies) * 1e3
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return (
        f"{len(rest)} service.predict calls, {wall / len(rest) * 1e3:.2f} ms per call under "
        f"cProfile; {http_ms:.2f} ms per unprofiled TestClient /predict\n" + text.getvalue()
    )


# -- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Build, serve, load, stop, check parity, print RESULT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=62)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time per phase")
    parser.add_argument("--warmup", type=float, default=5.0, help="warm-up time per phase")
    parser.add_argument("--batch-rows", type=int, default=100)
    parser.add_argument("--parity-sample", type=int, default=3000)
    parser.add_argument("--sequential", type=float, default=10.0,
                        help="seconds of /predict on one connection after the load (parity "
                        "without requests in flight on other connections; 0: none)")  # fmt: skip
    parser.add_argument("--profile", type=int, default=300, help="/predict calls to profile")
    parser.add_argument("--max-rps", type=float, default=1500.0,
                        help="bodies are built for at most this many predictions/s")  # fmt: skip
    parser.add_argument("--keep", type=Path, default=None, help="build the home here, keep it")
    parser.add_argument(
        "--shadow",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="end with a /predict phase while a shadow scores every request",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("[serve] ABORT: wrk not found (apt-get install wrk)", file=sys.stderr)
        return 2

    from loopline.features.feast_ops import feast_environment, service_layout
    from loopline.ops.components import settings_env
    from loopline.settings import Settings
    from loopline.spec import load_spec
    from loopline.stages import run_features, run_ingest
    from loopline.stages.features import run_served_skew

    spec = load_spec("fraud")
    wall = time.perf_counter()
    load_start = _uptime()
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            folder = args.keep
            folder.mkdir(parents=True, exist_ok=True)
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-serve-")))
        work = folder / "bench"
        work.mkdir(exist_ok=True)
        settings = Settings(home=folder / "home")
        _progress(f"building the demo home ({args.days} days x {args.customers} customers)")
        started = time.perf_counter()
        now, _ = build_home(settings, spec, days=args.days, customers=args.customers)
        build_s = time.perf_counter() - started
        base = live_bodies(settings, spec, now)
        if not base:
            raise RuntimeError("no live events")
        _progress(f"home built in {build_s:.0f} s; {len(base):,} live events per pass")

        # One stream of new events in time order over the live day (after the history's end):
        # /predict warm-up, /predict, /predict/batch warm-up, /predict/batch, each event once.
        span = args.warmup + args.seconds
        n_predict = max(len(base), math.ceil(args.max_rps * span))
        n_rows = max(len(base), math.ceil(args.max_rps * 1.5 * span / args.batch_rows)
                     * args.batch_rows)  # fmt: skip
        n_seq = math.ceil(args.max_rps * args.sequential)
        n_shadow = n_predict if args.shadow else 0
        n_shadow_seq = n_seq if args.shadow else 0
        stream = timeline(base, spec, start=now - timedelta(days=1) + timedelta(minutes=1),
                          end=datetime.now(UTC) - timedelta(minutes=1),
                          total=n_predict + n_rows + n_seq + n_shadow + n_shadow_seq)  # fmt: skip
        split: dict[str, tuple[Path, Path]] = {}
        ends = [n_predict, n_predict + n_rows, n_predict + n_rows + n_seq]
        parts = {"predict": stream[: ends[0]], "batch": stream[ends[0] : ends[1]],
                 "sequential": stream[ends[1] : ends[2]]}  # fmt: skip
        if args.shadow:
            parts["shadow"] = stream[ends[2] : ends[2] + n_shadow]
            parts["shadow sequential"] = stream[ends[2] + n_shadow :]
        for name, events in parts.items():
            cut = int(len(events) * args.warmup / span) if "sequential" not in name else 0
            if name == "batch":
                cut -= cut % args.batch_rows
            warm, measured = work / f"{name}.warm.jsonl", work / f"{name}.measured.jsonl"
            for path, chunk in ((warm, events[:cut]), (measured, events[cut:])):
                tag = PHASE_TAGS[name if path is measured else f"{name} warm-up"]
                for body in chunk:  # the phase in the request id, for parity per phase
                    body["request_id"] = body["request_id"].replace("serve-", f"serve{tag}-", 1)
                if name == "batch":
                    write_lines(path, chunked(iter(chunk), args.batch_rows))
                else:
                    write_lines(path, iter(chunk))
            split[name] = (warm, measured)
        keys = spec.entity_keys
        feast_file = work / "feast.jsonl"
        n_feast = write_lines(
            feast_file,
            ({"feature_service": SERVICE, "entities": {k: [b[k]] for k in keys}} for b in base),
        )
        _progress(
            f"bodies: {n_predict:,} /predict, {n_rows // args.batch_rows:,} /predict/batch x "
            f"{args.batch_rows}, {n_feast:,} Feast entity rows (cycled)"
        )
        del stream, parts

        api_port, feast_port = _free_port(), _free_port()
        api_env = {**os.environ, **settings_env(settings), "LOOPLINE_HOME": str(settings.home),
                   "PYTHONUNBUFFERED": "1"}  # fmt: skip
        feast_env = {**os.environ, **feast_environment(settings)}
        bindir = Path(sys.executable).parent
        api_argv = [sys.executable, "-m", "uvicorn", "loopline.serving.app:create_app",
                    "--factory", "--host", "127.0.0.1", "--port", str(api_port),
                    "--workers", "1", "--no-access-log"]  # fmt: skip
        feast_argv = [str(bindir / "feast"), "-c", str(settings.feature_repo), "serve",
                      "-h", "127.0.0.1", "-p", str(feast_port), "--workers", "1",
                      "--no-access-log", "--max-requests", "0"]  # fmt: skip
        api_url, feast_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{feast_port}"
        phases: dict[str, dict[str, Any]] = {}
        health: dict[str, Any] = {}
        with (
            server(
                feast_argv, feast_env, f"{feast_url}/health", work / "feast.log", "feast"
            ) as feast_proc,
            server(api_argv, api_env, f"{api_url}/ready", work / "api.log", "loopline") as api_proc,
        ):
            _progress(f"servers up (loopline {api_url}, feast {feast_url}); checking answers")
            features = len(service_layout(SERVICE, spec).features)
            sample = json.loads(feast_file.read_text().splitlines()[0])
            answer = httpx.post(f"{feast_url}/get-online-features", json=sample, timeout=30)
            answer.raise_for_status()
            names = answer.json()["metadata"]["feature_names"]
            if len(names) - len(keys) != features:
                raise RuntimeError(f"feast serves {len(names)} columns, expected {features}")

            marks: dict[str, tuple[int, float]] = {}

            def run(name: str, url: str, path: str, warm: Path | None, measured: Path,
                    wrap: bool) -> None:  # fmt: skip
                if warm is not None and warm.stat().st_size > 0:
                    wrk(url, path, warm, connections=args.connections, seconds=args.warmup,
                        wrap=wrap, work=work)  # fmt: skip
                if url == api_url:  # requests cut off by wrk finish before timing
                    marks[name] = (settle(api_url)["prediction_log"]["appended"],
                                   time.perf_counter())  # fmt: skip
                result = wrk(url, path, measured, connections=args.connections,
                             seconds=args.seconds, wrap=wrap, work=work)  # fmt: skip
                phases[name] = result
                _progress(f"{name}: {json.dumps(result)}")

            run("predict", api_url, "/predict", *split["predict"], wrap=False)
            settle(api_url)
            run("feast", feast_url, "/get-online-features", feast_file, feast_file, wrap=True)
            run("batch", api_url, "/predict/batch", *split["batch"], wrap=False)
            health = settle(api_url)
            # Server side: every row the measured batch run sent, until the last one finished.
            before, started_batch = marks["batch"]
            drained = health["_last_change"] - started_batch
            rows = health["prediction_log"]["appended"] - before
            phases["batch"]["server_rows"] = rows
            phases["batch"]["server_rows_per_s"] = round(rows / max(drained, 1e-9), 1)
            phases["batch"]["server_seconds"] = round(drained, 2)
            if args.sequential > 0:
                result = wrk(api_url, "/predict", split["sequential"][1], connections=1,
                             seconds=args.sequential, wrap=False, work=work)  # fmt: skip
                phases["sequential"] = result
                _progress(f"sequential: {json.dumps(result)}")
                health = settle(api_url)
            if args.shadow:
                # The champion's own version as the shadow: what shadow scoring costs the
                # answer (same load, same connections as the /predict phase).
                shadow_alias(settings, spec, api_url)
                run("shadow", api_url, "/predict", *split["shadow"], wrap=False)
                health = settle(api_url)
                if args.sequential > 0:  # below saturation: one request at a time
                    result = wrk(api_url, "/predict", split["shadow sequential"][1],
                                 connections=1, seconds=args.sequential, wrap=False,
                                 work=work)  # fmt: skip
                    phases["shadow sequential"] = result
                    _progress(f"shadow sequential: {json.dumps(result)}")
                    health = settle(api_url)
            _progress(f"health after load: {json.dumps(health)}")
            for name, result in phases.items():
                sent = {"predict": n_predict * (1 - args.warmup / span),
                        "shadow": n_shadow * (1 - args.warmup / span),
                        "batch": n_rows / args.batch_rows * (1 - args.warmup / span),
                        "sequential": n_seq}.get(name)  # fmt: skip
                if sent is not None and result["requests"] > sent:
                    _progress(f"WARNING: {name} ran out of bodies (GET /health sent); "
                              "raise --max-rps")  # fmt: skip
            _progress("stopping loopline (lifespan flush lands the served events)")
            code = stop(api_proc)
            _progress(f"loopline exited with {code}; stopping feast")
            stop(feast_proc)

        _progress("parity: ingest the landed events, rebuild features, served skew")
        started = time.perf_counter()
        run_ingest(settings, spec)
        run_features(settings, spec)
        report = run_served_skew(settings, spec, sample=args.parity_sample)
        by_phase = parity_by_phase(settings, spec, limit=args.parity_sample)
        parity_s = time.perf_counter() - started
        for phase, figures in by_phase.items():
            _progress(f"parity of {phase}: {json.dumps(figures)}")
        bad = [f for f in report.get("features", []) if f.get("mismatches")]
        _progress(
            f"parity: {report['requests']} requests, {report['checked']} features checked, "
            f"{report['mismatches']} mismatches ({parity_s:.0f} s)"
        )
        for feature in bad[:10]:
            _progress(f"  mismatch: {json.dumps(feature, default=str)[:400]}")

        profile_text = None
        if args.profile > 0:
            _progress(f"profiling {args.profile} /predict calls in-process")
            extra = timeline(base, spec, start=datetime.now(UTC) - timedelta(seconds=50),
                             end=datetime.now(UTC), total=args.profile + 20)  # fmt: skip
            for body in extra:
                body["request_id"] = "profile-" + body["request_id"]
                body[spec.events.id] = "profile-" + body[spec.events.id]
            profile_text = profile(settings, spec, extra)
            print(profile_text, file=sys.stderr, flush=True)

    predict, feast, batch = phases["predict"], phases["feast"], phases["batch"]
    batch_rows_per_s = round(batch["requests"] * args.batch_rows / batch["seconds"], 1)
    result = {
        "name": "serve",
        "ours": predict["p99_ms"],
        "peer": feast["p99_ms"],
        "unit": "ms",
        "predictions_per_s": max(predict["rps"], batch_rows_per_s),
        "predict_rps": predict["rps"],
        "batch_rows_per_s": batch_rows_per_s,
        "batch_rps": batch["rps"],
        "feast_rps": feast["rps"],
        "p50s": {
            "predict": predict["p50_ms"],
            "feast": feast["p50_ms"],
            "batch": batch["p50_ms"],
        },
        "p99s": {
            "predict": predict["p99_ms"],
            "feast": feast["p99_ms"],
            "batch": batch["p99_ms"],
        },
        "parity_checked": report["checked"],
        "parity_mismatches": report["mismatches"],
        "parity_requests": report["requests"],
        "parity_by_phase": by_phase,
        "connections": args.connections,
        "seconds": args.seconds,
        "batch_rows": args.batch_rows,
        "customers": args.customers,
        "live_events_per_pass": len(base),
        "shadow_p99_ms": phases.get("shadow", {}).get("p99_ms"),
        "shadow_p99_rise_ms": (
            round(phases["shadow"]["p99_ms"] - predict["p99_ms"], 2) if "shadow" in phases else None
        ),
        "shadow_sequential_p99_rise_ms": (
            round(phases["shadow sequential"]["p99_ms"] - phases["sequential"]["p99_ms"], 2)
            if "shadow sequential" in phases and "sequential" in phases
            else None
        ),
        "p99_target_met": predict["p99_ms"] <= feast["p99_ms"],
        "throughput_target_met": max(predict["rps"], batch_rows_per_s) >= 1000,
        "phases": phases,
        "health": {k: health.get(k) for k in ("prediction_log", "online")},
        "build_s": round(build_s, 1),
        "parity_s": round(parity_s, 1),
        "wall_s": round(time.perf_counter() - wall, 1),
        "load": f"{load_start} -> {_uptime()}",
    }
    print("RESULT " + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
