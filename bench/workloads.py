"""The benchmark's workloads. Each drives one running set-up through the Python MLflow client
and returns plain numbers for the report."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import statistics
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import psutil
import requests
from mlflow.entities import Metric, Param, RunTag

from bench.seed import seed_runs
from bench.setups import Running

MB = 2**20


@dataclass(frozen=True)
class Sizes:
    latency_calls: int
    ingestion: dict[int, int]  # concurrent clients -> runs per client
    search_runs: tuple[int, ...]  # the sizes of the ordered-search sweep, ascending
    search_repeats: int
    small_files: int  # 1 MB each
    medium_files: int
    medium_mb: int
    large_mb: int  # 0: skip
    crashes: int  # kill -9 of the server, each after it has stayed up a minute
    busy_seconds: float  # the 64-client mixed workload


FULL = Sizes(200, {1: 30, 8: 10, 32: 4}, (10_000, 100_000), 20, 100, 3, 100, 1024, 3, 60.0)
# The sweep's smallest quick size still fills a 100-run page of the filtered search (~1 in 20).
QUICK = Sizes(30, {1: 3, 8: 2, 32: 1}, (5_000, 10_000), 5, 10, 1, 20, 0, 1, 2.0)
#: The sweep's extra size with ``--million``.
MILLION = 1_000_000
BUSY_CLIENTS = 64
CRASH_SPACING = 61.0  # the supervisor's delay starts over after a minute up (0.25 s)


def use(running: Running) -> Any:
    """Point the MLflow client of this process at one set-up; return an MlflowClient."""
    os.environ["MLFLOW_TRACKING_URI"] = running.tracking_uri
    for name, value in zip(
        ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"),
        running.auth or (None, None),
        strict=True,
    ):
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    # Errors must surface, not hide behind retries; enough pooled connections for 32 clients.
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_POOL_MAXSIZE"] = "64"
    # set_terminated otherwise fetches the run again just to print links to it
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    mlflow.set_tracking_uri(running.tracking_uri)
    return mlflow.MlflowClient(running.tracking_uri)


def _percentiles(timings_ms: list[float]) -> dict[str, float]:
    ordered = sorted(timings_ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered), 2), "p95_ms": round(p95, 2)}


def _time_calls(call: Callable[[int], object], count: int, warmup: int = 5) -> dict[str, float]:
    for i in range(warmup):
        call(-1 - i)
    timings = []
    for i in range(count):
        began = time.perf_counter()
        call(i)
        timings.append((time.perf_counter() - began) * 1000)
    return _percentiles(timings)


def typical_runs(
    client: Any, label: str, count: int, *, notes: bool = False
) -> tuple[str, list[str]]:
    """An experiment of ``count`` typically sized runs (10 params, 5 metrics whose values
    differ between runs, 3 tags; with ``notes``, a small text artifact each)."""
    experiment = client.create_experiment(f"bench-{label}-{uuid.uuid4().hex[:8]}")
    now = int(time.time() * 1000)
    run_ids = []
    for i in range(count):
        run_id = client.create_run(experiment, run_name=f"{label}-{i}").info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric(f"metric_{k}", (i * k) % 7 / 10, now, 0) for k in range(5)],
            params=[Param(f"param_{k}", str(k)) for k in range(10)],
            tags=[RunTag(f"tag_{k}", "x") for k in range(3)],
        )
        if notes:
            client.log_text(run_id, "bench", f"notes/{i}.txt")
        run_ids.append(run_id)
    return experiment, run_ids


def latency(running: Running, sizes: Sizes) -> dict[str, dict[str, float]]:
    """Small calls on typically sized runs: 10 params, 5 metrics and 3 tags each."""
    client = use(running)
    experiment, run_ids = typical_runs(client, "latency", 10)
    target = run_ids[0]
    writes = client.create_run(experiment, run_name="writes").info.run_id
    n = sizes.latency_calls
    return {
        "log_param": _time_calls(lambda i: client.log_param(writes, f"p{i}", str(i)), n),
        "log_metric": _time_calls(lambda i: client.log_metric(writes, "m", i, step=i), n),
        "get_run": _time_calls(lambda i: client.get_run(target), n),
        "search_runs": _time_calls(lambda i: client.search_runs([experiment], max_results=10), n),
    }


def ingestion(running: Running, clients: int, runs_per_client: int) -> dict[str, float]:
    """Concurrent training jobs: each run logs 20 params and 1,000 points in 5 log_batch."""
    use(running)
    experiment = mlflow.MlflowClient().create_experiment(f"bench-ingest-{uuid.uuid4().hex[:8]}")
    params = [Param(f"param_{i}", str(i)) for i in range(20)]

    def job(_: int) -> tuple[int, int, str]:
        client = mlflow.MlflowClient()
        done = errors = 0
        last_error = ""
        for _ in range(runs_per_client):
            try:
                run_id = client.create_run(experiment).info.run_id
                client.log_batch(run_id, params=params)
                now = int(time.time() * 1000)
                for chunk in range(5):
                    steps = range(chunk * 200, (chunk + 1) * 200)
                    client.log_batch(
                        run_id, metrics=[Metric("loss", 1 / (s + 1), now, s) for s in steps]
                    )
                client.set_terminated(run_id)
                done += 1
            except Exception as error:  # noqa: BLE001 - counted and reported
                errors += 1
                last_error = f"{type(error).__name__}: {error}"[:300]
        return done, errors, last_error

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(job, range(clients)))
    seconds = time.perf_counter() - began
    done = sum(r[0] for r in results)
    return {
        "clients": clients,
        "runs": done,
        "errors": sum(r[1] for r in results),
        "runs_per_s": round(done / seconds, 2),
        "points_per_s": round(done * 1000 / seconds),
        "seconds": round(seconds, 1),
        "last_error": next((r[2] for r in results if r[2]), ""),
    }


def _p(ordered: list[float], q: float) -> float:
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)


def busy(running: Running, sizes: Sizes) -> dict[str, Any]:
    """A busy team: 64 clients back to back for a fixed time, each call drawn from a mix of
    log_batch, get_run, search_runs, artifact listing and the UI's run search, over the REST
    API with keep-alive. Every non-2xx answer or failed call counts as an error."""
    client = use(running)
    experiment, run_ids = typical_runs(client, "busy", 40, notes=True)
    now = int(time.time() * 1000)
    api = f"{running.tracking_uri}/api/2.0/mlflow"
    ui_search = {
        "experiment_ids": [experiment],
        "filter": "",
        "run_view_type": "ACTIVE_ONLY",
        "max_results": 100,
        "order_by": ["attributes.start_time DESC"],
    }

    def call(session: requests.Session, op: str, rng: random.Random) -> requests.Response:
        run_id = rng.choice(run_ids)
        if op == "log_batch":
            metrics = [
                {
                    "key": f"live{k}",
                    "value": rng.random(),
                    "timestamp": now,
                    "step": rng.randrange(10**6),
                }
                for k in range(10)
            ]
            return session.post(
                f"{api}/runs/log-batch", json={"run_id": run_id, "metrics": metrics}
            )
        if op == "get_run":
            return session.get(f"{api}/runs/get", params={"run_id": run_id})
        if op == "search_runs":
            body = {
                "experiment_ids": [experiment],
                "max_results": 10,
                "order_by": ["metrics.metric_1 DESC"],
            }
            return session.post(f"{api}/runs/search", json=body)
        if op == "list_artifacts":
            return session.get(f"{api}/artifacts/list", params={"run_id": run_id, "path": "notes"})
        return session.post(
            f"{running.tracking_uri}/ajax-api/2.0/mlflow/runs/search", json=ui_search
        )

    mix = (
        ["log_batch"] * 6
        + ["get_run"] * 5
        + ["search_runs"] * 4
        + ["list_artifacts"] * 3
        + ["ui_search"] * 2
    )
    deadline = time.monotonic() + sizes.busy_seconds
    timings: dict[str, list[float]] = {op: [] for op in dict.fromkeys(mix)}
    errors: dict[str, int] = dict.fromkeys(timings, 0)
    last_error: list[str] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)  # noqa: S311 - a workload, not a secret
        with requests.Session() as session:
            session.auth = running.auth
            while time.monotonic() < deadline:
                op = rng.choice(mix)
                began = time.perf_counter()
                try:
                    answer = call(session, op, rng)
                    ok = answer.status_code < 300
                    if not ok:
                        last_error[:] = [f"{op}: HTTP {answer.status_code} {answer.text[:200]}"]
                except requests.RequestException as error:
                    ok = False
                    last_error[:] = [f"{op}: {type(error).__name__}: {error}"[:300]]
                timings[op].append((time.perf_counter() - began) * 1000)
                if not ok:
                    errors[op] += 1

    began = time.perf_counter()
    with ThreadPoolExecutor(BUSY_CLIENTS) as pool:
        list(pool.map(worker, range(BUSY_CLIENTS)))
    seconds = time.perf_counter() - began
    every = sorted(t for values in timings.values() for t in values)
    return {
        "clients": BUSY_CLIENTS,
        "seconds": round(seconds, 1),
        "requests": len(every),
        "req_per_s": round(len(every) / seconds, 1),
        "p50_ms": _p(every, 0.5),
        "p99_ms": _p(every, 0.99),
        "errors": sum(errors.values()),
        "by_call": {
            op: {
                "requests": len(values),
                "p50_ms": _p(sorted(values), 0.5) if values else None,
                "p99_ms": _p(sorted(values), 0.99) if values else None,
                "errors": errors[op],
            }
            for op, values in timings.items()
        },
        "last_error": last_error[0] if last_error else "",
    }


SEARCHES = {
    "filtered+ordered": {
        "filter_string": "params.family = 'xgboost' and metrics.rmse < 4",
        "order_by": ["metrics.rmse ASC"],
        "max_results": 100,
    },
    "ordered": {"order_by": ["metrics.rmse ASC"], "max_results": 100},
    "tag filter": {"filter_string": "tags.team = 'pricing'", "max_results": 100},
}


def search_at_scale(running: Running, sizes: Sizes) -> dict[str, Any]:
    """The searches over one experiment as it grows through ``sizes.search_runs``: seeded up
    to each size, then timed, so that the sweep shows how a search's cost grows."""
    client = use(running)
    experiment = client.create_experiment(f"bench-search-{uuid.uuid4().hex[:8]}")
    artifact_root = client.get_experiment(experiment).artifact_location
    sweep = []
    seeded = 0
    for size in sizes.search_runs:
        began = time.perf_counter()
        seed_runs(
            running.db_url,
            running.db_password,
            experiment_id=int(experiment),
            artifact_root=artifact_root,
            start=seeded,
            total=size - seeded,
        )
        seeded = size
        entry: dict[str, Any] = {"runs": size, "seed_s": round(time.perf_counter() - began)}
        for name, query in SEARCHES.items():
            _check_search(client, experiment, name, query)
            entry[name] = _time_calls(
                lambda _, q=query: client.search_runs([experiment], **q), sizes.search_repeats, 1
            )
        sweep.append(entry)
    return {"sweep": sweep}


def _check_search(client: Any, experiment: str, name: str, query: dict[str, Any]) -> None:
    found = client.search_runs([experiment], **query)
    if len(found) != query["max_results"]:
        raise RuntimeError(f"search {name}: {len(found)} runs instead of {query['max_results']}")
    values = [r.data.metrics["rmse"] for r in found]
    if "order_by" in query and values != sorted(values):
        raise RuntimeError(f"search {name}: results not ordered by rmse")


def make_artifact_files(root: Path, sizes: Sizes) -> dict[str, list[Path]]:
    """Random files, written once per benchmark and reused by every set-up."""
    plan = [
        (f"{sizes.small_files} x 1 MB", "small", sizes.small_files, 1),
        (
            f"{sizes.medium_files} x {sizes.medium_mb} MB",
            "medium",
            sizes.medium_files,
            sizes.medium_mb,
        ),
    ]
    if sizes.large_mb:
        plan.append((f"1 x {sizes.large_mb // 1024} GB", "large", 1, sizes.large_mb))
    groups = {}
    for name, folder, count, mb in plan:
        paths = [root / folder / f"{folder}-{i:03d}.bin" for i in range(count)]
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                with path.open("wb") as handle:
                    for _ in range(mb):
                        handle.write(os.urandom(MB))
        groups[name] = paths
    return groups


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(8 * MB), b""):
            digest.update(block)
    return digest.hexdigest()


def artifacts(running: Running, groups: dict[str, list[Path]], scratch: Path) -> dict[str, Any]:
    """MB/s through the server's proxy, and directly against the same S3 store."""
    use(running)
    result: dict[str, Any] = {}
    experiment = mlflow.MlflowClient().create_experiment(f"bench-artifacts-{uuid.uuid4().hex[:8]}")
    for index, (name, paths) in enumerate(groups.items()):
        total = sum(p.stat().st_size for p in paths) / MB
        folder = f"g{index}"
        with mlflow.start_run(experiment_id=experiment) as run:
            began = time.perf_counter()
            if len(paths) > 1:
                mlflow.log_artifacts(str(paths[0].parent), folder)
            else:
                mlflow.log_artifact(str(paths[0]), folder)
            up = time.perf_counter() - began
        target = scratch / folder
        began = time.perf_counter()
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path=folder, dst_path=str(target)
        )
        down = time.perf_counter() - began
        got = target / folder
        if sorted(p.name for p in got.iterdir()) != sorted(p.name for p in paths):
            raise RuntimeError(f"artifacts {name}: downloaded files differ from uploaded ones")
        if _digest(got / paths[-1].name) != _digest(paths[-1]):
            raise RuntimeError(f"artifacts {name}: downloaded bytes differ")
        shutil.rmtree(target)
        began = time.perf_counter()
        ui_download(running, run.info.run_id, folder, paths)
        ui_down = time.perf_counter() - began
        entry = {
            "proxied_up_MBps": round(total / up, 1),
            "proxied_down_MBps": round(total / down, 1),
            "ui_down_MBps": round(total / ui_down, 1),
        }
        if running.s3 is not None:
            prefix = f"direct/{uuid.uuid4().hex}"
            began = time.perf_counter()
            for path in paths:
                running.s3.upload_file(str(path), running.bucket, f"{prefix}/{path.name}")
            direct_up = time.perf_counter() - began
            began = time.perf_counter()
            for path in paths:
                running.s3.download_file(
                    running.bucket, f"{prefix}/{path.name}", str(scratch / "d")
                )
            direct_down = time.perf_counter() - began
            (scratch / "d").unlink()
            entry |= {
                "direct_up_MBps": round(total / direct_up, 1),
                "direct_down_MBps": round(total / direct_down, 1),
                "proxied_up_vs_direct": round(direct_up / up, 2),
            }
        result[name] = entry
    return result


def ui_download(running: Running, run_id: str, folder: str, paths: list[Path]) -> None:
    """Each file through the UI's route (``GET /get-artifact``), one after another over one
    kept-alive connection, as a browser fetches them; the last one's bytes are checked."""
    with requests.Session() as session:
        session.auth = running.auth
        for path in paths:
            digest = hashlib.sha256()
            with session.get(
                f"{running.tracking_uri}/get-artifact",
                params={"run_id": run_id, "path": f"{folder}/{path.name}"},
                stream=True,
                timeout=600,
            ) as answer:
                answer.raise_for_status()
                for chunk in answer.iter_content(MB):
                    if path == paths[-1]:
                        digest.update(chunk)
        if digest.hexdigest() != _digest(paths[-1]):
            raise RuntimeError(f"artifacts {folder}: the UI's download differs")


def recovery(running: Running, sizes: Sizes) -> dict[str, Any] | None:
    """kill -9 of the whole MLflow server (its process group: master and workers), then the
    seconds until a logged-in API call answers 200 again. Only a set-up whose supervisor
    restarts the server has a figure; stock MLflow stays down."""
    supervisors = [r for r in running.records if _name_of(r.argv) == ["--name", "mlflow"]]
    if not supervisors:
        return None
    session = requests.Session()
    session.auth = running.auth
    probe = f"{running.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    seconds = []
    for crash in range(sizes.crashes):
        if crash:
            time.sleep(CRASH_SPACING)
        (serve,) = psutil.Process(supervisors[0].pid).children()
        os.killpg(serve.pid, signal.SIGKILL)
        began = time.monotonic()
        while time.monotonic() - began < 120:
            try:
                if session.get(probe, timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError("the server did not serve again within 120 s of kill -9")
        seconds.append(round(time.monotonic() - began, 2))
    return {"serving_again_s": seconds}


def _name_of(argv: list[str]) -> list[str]:
    index = argv.index("--name") if "--name" in argv else -1
    return argv[index : index + 2] if index >= 0 else []


KINDS = (
    ("huey_consumer", "huey consumer"),
    ("job_runner", "job runner"),
    ("spawn_main", "uvicorn worker"),
    ("-m uvicorn", "uvicorn supervisor"),
    ("resource_tracker", "multiprocessing tracker"),
    ("mlflow_stack.native.supervisor", "mlflow-stack supervisor"),
    ("mlflow_stack", "mlflow-stack serve (mlflow server)"),
    ("mlflow server", "mlflow server (launcher)"),
    ("weed", "SeaweedFS"),
    ("postgres", "PostgreSQL"),
)


def _kind(proc: psutil.Process) -> str:
    try:
        cmdline = " ".join(proc.cmdline())
        parent = proc.parent()
        if parent is not None and parent.cmdline() == proc.cmdline() and "mlflow_stack" in cmdline:
            return "mlflow-stack serve worker (forked)"
    except psutil.Error:
        return "gone"
    return next((label for needle, label in KINDS if needle in cmdline), proc.name())


def memory(running: Running) -> dict[str, Any]:
    """Memory of every process of the set-up, grouped by kind (MB): resident (RSS) and
    proportional (PSS: each shared page divided among the processes sharing it, so forked
    workers count what they do not share with their master)."""
    by_kind: dict[str, list[tuple[float, float]]] = {}
    for record in running.records:
        for proc in record.group():
            try:
                info = proc.memory_full_info()
            except psutil.Error:
                continue
            by_kind.setdefault(_kind(proc), []).append((info.rss / MB, info.pss / MB))
    return {
        "total_MB": round(sum(rss for v in by_kind.values() for rss, _ in v)),
        "total_PSS_MB": round(sum(pss for v in by_kind.values() for _, pss in v)),
        "processes": {
            k: {
                "count": len(v),
                "MB": round(sum(rss for rss, _ in v)),
                "PSS_MB": round(sum(pss for _, pss in v)),
            }
            for k, v in sorted(by_kind.items())
        },
    }
