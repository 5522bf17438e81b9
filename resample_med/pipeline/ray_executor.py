"""The Ray executor of :func:`~resample_med.pipeline.studies.reconstruct_studies`.

Ray (``pip install "resample-med[cluster]"``) is imported only here and only when asked for. The
driver joins a cluster (``address="auto"`` or ``"ray://HOST:PORT"``) or starts a local one, starts
a pool of :class:`~resample_med.pipeline.studies.StudyWorker` actors (one per GPU with
``gpus_per_task=1``, or one per CPU), each loading the prior once, and hands them tasks one at a
time: ``plan`` a series, reconstruct one of its slice ``chunks``, ``finish`` it. An idle worker
takes, in this order, a task of the series it last worked on (whose input it holds), the plan of a
new series, or any other task (so the workers share a long series at the end). With many series
each worker thus loads each of its series once; a series shared by ``k`` workers is read ``k``
times (see ``benchmarks/results/scale_out.md``).

Failures: a task whose worker died (killed, out of memory, node lost) is retried on another
worker and the lost worker replaced; a task that raised an unexpected error is retried; after
``max_retries`` retries its series is reported failed and the others go on. An error of the input
or settings (a ``ValueError``: unreadable DICOM, checkpoint of other settings...) fails its
series at once. Finished slices are never redone: they are in the series' checkpoint.
"""

from __future__ import annotations

import dataclasses
import socket
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from resample_med.pipeline.studies import (
    INPUT_ERRORS,
    ChunkResult,
    EventCallback,
    SeriesPlan,
    SeriesRecord,
    StudyWorker,
    check_marker,
    chunk_done,
    fail,
    planned,
    settle,
    study_settings,
    write_marker,
)

MISSING_RAY = (
    "--executor ray needs Ray, which is not installed: "
    'pip install "resample-med[cluster]" (in a checkout: pip install -e ".[cluster]")'
)
"""The one line a user sees when Ray is asked for but missing."""

RAY_DEVICES = ("auto", "cpu", "cuda")
"""``--device`` values that make sense on Ray (Ray assigns each GPU worker its own GPU as ``cuda``)."""


def import_ray() -> Any:
    """The ``ray`` module, or a ``ConfigError`` with :data:`MISSING_RAY`."""
    from resample_med.config import ConfigError

    try:
        import ray
    except ImportError as err:
        raise ConfigError(MISSING_RAY) from err
    return ray


@dataclasses.dataclass(eq=False)
class _Task:
    """One call of a worker method: ``kind`` is ``ready``, ``plan``, ``chunk`` or ``finish``."""

    kind: str
    series: int
    args: tuple[Any, ...] = ()
    attempt: int = 0


class _Pool:
    """Worker actors: started, replaced when lost (within a budget), killed at the end."""

    def __init__(
        self, ray: Any, settings: Any, marker: Path, n_workers: int, gpus_per_task: float, max_retries: int
    ) -> None:
        self.ray = ray
        self.actor_class = ray.remote(StudyWorker)
        self.options = {
            "num_cpus": settings.threads,
            "num_gpus": gpus_per_task,
            "max_restarts": 0,
            "max_task_retries": 0,
        }
        self.settings, self.marker = settings, str(marker)
        self.run_id = uuid.uuid4().hex[:8]
        self.names: dict[Any, str] = {}
        self.started = 0
        self.budget = n_workers * (max_retries + 1)
        self.actors = [self.start() for _ in range(n_workers)]

    def start(self) -> Any:
        """A new worker actor (it loads the prior in the background)."""
        name = f"resample-med-worker-{self.run_id}-{self.started}"
        self.started += 1
        actor = self.actor_class.options(name=name, **self.options).remote(self.settings, self.marker)
        self.names[actor] = name
        return actor

    def replace(self, lost: Any) -> Any | None:
        """A replacement for the ``lost`` actor, or ``None`` once the budget of restarts is spent."""
        self.actors.remove(lost)
        if self.budget <= 0:
            return None
        self.budget -= 1
        actor = self.start()
        self.actors.append(actor)
        return actor

    def shutdown(self) -> None:
        """Kill every worker (their finished slices are in the checkpoints)."""
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.actors = []


def run(
    ray: Any,
    jobs: list[Any],
    records: list[SeriesRecord],
    output: Path,
    config: Any,
    *,
    options: Any,
    overwrite: bool,
    address: str | None,
    workers: int | None,
    gpus_per_task: float | None,
    cpus_per_worker: int,
    chunk_slices: int,
    max_retries: int,
    on_event: EventCallback | None,
) -> dict[str, Any]:
    """Run every job on Ray; fills ``records`` and returns the report's ``executor`` section."""
    from resample_med.config import ConfigError

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False)
        except ConnectionError as err:
            raise ConfigError(
                f"--address {address}: cannot join a Ray cluster ({err}); start one with "
                "`ray start --head`, or leave --address out to start Ray on this machine"
            ) from err
    pool: _Pool | None = None
    marker: Path | None = None
    try:
        resources = ray.cluster_resources()
        n_gpus, n_cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 0))
        if gpus_per_task is None:
            gpus_per_task = 1.0 if n_gpus else 0.0
        if gpus_per_task < 0 or (gpus_per_task > 0 and n_gpus < gpus_per_task):
            raise ConfigError(f"--gpus-per-task {gpus_per_task:g}: the Ray cluster has {n_gpus:g} GPU(s)")
        device = _worker_device(config.reconstruction.device, gpus_per_task)
        n_workers = workers or max(1, int(n_gpus // gpus_per_task) if gpus_per_task else int(n_cpus // cpus_per_worker))
        settings = study_settings(
            config, device, str(output), options, overwrite, chunk_slices, threads=cpus_per_worker
        )
        marker = write_marker(output)
        check_marker(marker)
        pool = _Pool(ray, settings, marker, n_workers, gpus_per_task, max_retries)
        if on_event is not None:
            on_event({"event": "workers", "series": None, "actors": [pool.names[a] for a in pool.actors]})
        info = {
            "name": "ray",
            "address": address or "local",
            "driver": socket.gethostname(),
            "workers": n_workers,
            "gpus_per_task": gpus_per_task,
            "cpus_per_worker": cpus_per_worker,
            "device": device,
        }
        _schedule(ray, pool, jobs, records, max_retries, on_event, info)
        return {**info, "worker_starts": pool.started, "cluster_resources": {"CPU": n_cpus, "GPU": n_gpus}}
    finally:
        if pool is not None:
            pool.shutdown()
        if marker is not None:
            marker.unlink(missing_ok=True)
        if started_here:
            ray.shutdown()


def _worker_device(device: str, gpus_per_task: float) -> str:
    """The workers' device: ``cuda`` on GPU workers, ``cpu`` otherwise; ``--device`` must agree."""
    from resample_med.config import ConfigError

    wanted = "cuda" if gpus_per_task > 0 else "cpu"
    if device not in RAY_DEVICES:
        raise ConfigError(f"--device {device} with --executor ray: Ray assigns the GPUs; use one of {RAY_DEVICES}")
    if device != "auto" and device != wanted:
        raise ConfigError(
            f"--device {device} with --gpus-per-task {gpus_per_task:g}: "
            f"{'pass --gpus-per-task 1 for GPU workers' if device == 'cuda' else 'pass --gpus-per-task 0 for CPU workers'}"
        )
    return wanted


def _schedule(
    ray: Any,
    pool: _Pool,
    jobs: list[Any],
    records: list[SeriesRecord],
    max_retries: int,
    on_event: EventCallback | None,
    executor: dict[str, Any],
) -> None:
    """Hand tasks to idle workers until every series is settled (module docstring)."""
    ready: deque[_Task] = deque()
    for i, job in enumerate(jobs):
        if job.error is not None:
            fail(records[i], job.error, on_event)
        else:
            ready.append(_Task("plan", i, (job,)))
    inflight: dict[Any, tuple[Any, _Task]] = {}
    for actor in pool.actors:
        inflight[actor.ready.remote()] = (actor, _Task("ready", -1))
    idle: list[Any] = []
    holds: dict[Any, int] = {}  # actor -> the series whose input it last loaded
    chunks_left: dict[int, set[tuple[int, int]]] = {}
    plans: dict[int, SeriesPlan] = {}

    def retry(task: _Task, error: BaseException) -> None:
        record = records[task.series]
        if task.attempt >= max_retries:
            what = f"slices {task.args[2]}:{task.args[3]}" if task.kind == "chunk" else task.kind
            fail(record, f"{what} failed {task.attempt + 1} time(s); last error: {error}", on_event)
            return
        record.retries += 1
        if on_event is not None:
            on_event(
                {
                    "event": "retry",
                    "series": record.series,
                    "task": task.kind,
                    "attempt": task.attempt + 1,
                    "error": str(error),
                }
            )
        ready.appendleft(dataclasses.replace(task, attempt=task.attempt + 1))

    while inflight or ready:
        while idle and ready:
            actor = idle.pop()
            task = _take(ready, holds.get(actor), records)
            if task is None:
                idle.append(actor)
                break
            holds[actor] = task.series
            if task.kind == "plan":
                records[task.series].started = time.perf_counter()
            records[task.series].tasks += 1
            inflight[getattr(actor, _METHODS[task.kind]).remote(*task.args)] = (actor, task)
        if not inflight:
            for task in ready:
                if records[task.series].status != "failed":
                    fail(records[task.series], "no Ray worker left (every replacement was lost too)", on_event)
            return
        (ref,), _ = ray.wait(list(inflight), num_returns=1)
        actor, task = inflight.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as err:
            replacement = pool.replace(actor)
            if on_event is not None:
                on_event(
                    {
                        "event": "worker_lost",
                        "series": None if task.series < 0 else records[task.series].series,
                        "actor": pool.names[actor],
                        "error": str(err).splitlines()[0],
                    }
                )
            if replacement is not None:
                inflight[replacement.ready.remote()] = (replacement, _Task("ready", -1))
            if task.series >= 0:
                retry(task, err)
            continue
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None) or err
            if task.kind == "ready":  # a worker cannot start (OUTPUT not shared, prior missing): stop
                raise cause from None
            idle.append(actor)
            if isinstance(cause, INPUT_ERRORS):
                fail(records[task.series], cause, on_event)
            else:
                retry(task, cause)
            continue
        idle.append(actor)
        if task.kind == "ready" or records[task.series].status == "failed":
            continue
        record, job = records[task.series], jobs[task.series]
        if task.kind == "plan":
            if not isinstance(result, SeriesPlan):
                settle(record, result, on_event)
                continue
            planned(record, result, on_event)
            plans[task.series] = result
            chunks_left[task.series] = set(result.chunks)
            follow = [
                _Task("chunk", task.series, (job, result.checkpoint, start, stop)) for start, stop in result.chunks
            ]
            ready.extendleft(reversed(follow or [_finish(task.series, job, record, result, executor)]))
        elif task.kind == "chunk":
            assert isinstance(result, ChunkResult)
            chunk_done(record, result, on_event, actor=pool.names[actor])
            chunks_left[task.series].discard((result.start, result.stop))
            if not chunks_left[task.series]:
                ready.appendleft(_finish(task.series, job, record, plans[task.series], executor))
        else:
            settle(record, result, on_event)


def _take(ready: deque[_Task], held: int | None, records: list[SeriesRecord]) -> _Task | None:
    """The next task for a worker holding series ``held``: its series' task, a new plan, or any."""
    for task in [t for t in ready if records[t.series].status == "failed"]:
        ready.remove(task)
    for wanted in (lambda t: t.series == held and t.kind != "plan", lambda t: t.kind == "plan", lambda t: True):
        for task in ready:
            if wanted(task):
                ready.remove(task)
                return task
    return None


_METHODS = {"ready": "ready", "plan": "plan", "chunk": "run_chunk", "finish": "finish"}
"""Worker method of each task kind."""


def _finish(series: int, job: Any, record: SeriesRecord, plan: SeriesPlan, executor: dict[str, Any]) -> _Task:
    """The finish task of a series whose slices are all done."""
    details = {**executor, "tasks": record.tasks, "retries": record.retries, "series_workers": sorted(record.workers)}
    return _Task("finish", series, (job, plan.checkpoint, sorted(record.computed), details))
