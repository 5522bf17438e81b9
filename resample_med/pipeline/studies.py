"""Many studies in one call: each series planned into slice chunks, chunks run by workers, one report.

:func:`reconstruct_studies` reconstructs every series found under INPUT (a folder of studies, one
study, a NIfTI or a sinogram file: :func:`resample_med.cli.inputs.find_jobs`) into OUTPUT exactly as
``resample-med reconstruct`` does (``OUTPUT/<study>[_<series>]/`` with ``dicom/``, ``report.json``,
``config.yaml``), with either executor:

* ``"local"`` (default): in this process, one series after the other;
* ``"ray"``: on a Ray cluster (:mod:`resample_med.pipeline.ray_executor`), one worker (actor) per
  GPU or CPU worker, each loading the prior once and keeping it.

A series goes through three steps, each run by a :class:`StudyWorker` (in process or as a Ray actor):

1. ``plan``: load the input, open its checkpoint (``.partial/``, the same
   :class:`~resample_med.pipeline.checkpoint.SliceCheckpoint` and fingerprint as the serial CLI),
   fold in the slices of earlier chunks, and list the slice chunks that still have unfinished slices;
2. ``run_chunk``: reconstruct slices ``[start, stop)`` into the chunk's own checkpoint
   (``.partial/chunks/START-STOP/``, same fingerprint): chunks of one series run at the same time
   on different workers, and a checkpoint folder has one writer at a time;
3. ``finish``: once every slice is done, fold the chunks into the series' checkpoint; the serial
   series runner then assembles the volume from it, writes the outputs and report.json and removes
   the checkpoint.

Same pixels as a serial run (on the same kind of device with the same number of torch threads:
PyTorch's CPU convolutions round differently with another thread count, by about 1e-6 relative,
which the sampler can carry to 1 HU; so Ray CPU workers run ``cpus_per_worker`` threads and equal a
serial run with that many): measurement noise is drawn per slice from ``(seed, series index)`` and
the sampler's generator per batch from ``(seed, index of the batch's first slice)``
(:mod:`.seeding`); chunk boundaries are multiples of ``batch_size`` (:func:`chunk_ranges`), so every
batch holds the same slices as in the serial run, whichever worker runs it. A chunk that finds a
batch only partly done (a worker killed while saving it) recomputes that whole batch.

Resume: finished slices are on disk as soon as their batch ends; after a crash of the driver or of
a worker the same call plans only the chunks with missing slices.

Shared storage: with Ray, every node must see INPUT and OUTPUT at the same path (NFS, Lustre, a
cluster file system): workers read the inputs and write the slices and outputs there directly. The
driver writes a marker file into OUTPUT and every worker checks it can read it before it starts;
a worker that cannot fails at once with :class:`SharedStorageError`, and nothing is reconstructed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resample_med.pipeline.checkpoint import SliceCheckpoint

EXECUTORS = ("local", "ray")
"""Where :func:`reconstruct_studies` runs the work: in this process, or on a Ray cluster."""

DEFAULT_CHUNK_SLICES = 32
"""Slices per task (rounded up to a multiple of the batch size): small enough to spread a long
series over workers, large enough that the per-task input load stays a small share."""

DEFAULT_MAX_RETRIES = 2
"""Times a failed task (a lost worker, an unexpected error) is retried before its series fails."""

AGGREGATE_REPORT = "report.json"
"""The run's aggregated report in OUTPUT (for a single series it is the series' own report)."""

MARKER_PREFIX = ".resample-med-shared-"
"""Name of the marker file the driver writes in OUTPUT and every worker must see."""

INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)
"""Errors of one series' input or settings (``DicomInputError``, ``ConfigError``, a checkpoint of
other settings, ...: all ``ValueError``): the series is reported failed, the others go on, and no
executor retries them (they would fail the same way)."""

EventCallback = Callable[[dict[str, Any]], None]
"""``on_event(event)``, called on the driver: ``event["event"]`` is ``planned``, ``chunk_done``,
``series_done``, ``series_failed``, ``retry`` or ``worker_lost``, with ``series`` and details."""


class SharedStorageError(RuntimeError):
    """A worker cannot see the driver's OUTPUT folder: OUTPUT is not on a shared file system."""


@dataclass(frozen=True)
class StudySettings:
    """Everything a worker needs to reconstruct exactly as the driver was asked to.

    Attributes:
        config: the resolved :class:`~resample_med.config.RunConfig`.
        device: where the worker computes (``"cpu"``, ``"cuda"``; a Ray GPU worker sees its own GPU as ``cuda``).
        preset: the resolved sampler preset.
        sampler: the method's config dataclass (preset plus overrides).
        output: OUTPUT (absolute; the same path on every node).
        options: how inputs are read (:class:`resample_med.cli.reconstruct.InputOptions`:
            ``--slices``, ``--skip-bad-slices``, ``--fill-nonfinite``), ``None`` for the defaults.
        overwrite: redo finished or partial outputs.
        chunk_slices: slices per task (:func:`chunk_ranges`).
        threads: torch CPU threads of the worker, ``None`` to keep the process default.
    """

    config: Any
    device: str
    preset: str
    sampler: Any
    output: str
    options: Any = None
    overwrite: bool = False
    chunk_slices: int = DEFAULT_CHUNK_SLICES
    threads: int | None = None


@dataclass(frozen=True)
class SeriesPlan:
    """What is left to do for one series.

    Attributes:
        n_slices: slices of the series (after ``--slices``).
        done: series indices already finished.
        chunks: ``[start, stop)`` ranges with unfinished slices.
        checkpoint: the series' checkpoint (chunks read it, and write their own beside it).
    """

    n_slices: int
    done: tuple[int, ...]
    chunks: tuple[tuple[int, int], ...]
    checkpoint: SliceCheckpoint


@dataclass(frozen=True)
class ChunkResult:
    """One finished chunk: which slices this task computed, how long it took, where it ran."""

    start: int
    stop: int
    computed: tuple[int, ...]
    seconds: float
    worker: str
    host: str


@dataclass
class SeriesRecord:
    """The driver's account of one series (a row of the aggregated report)."""

    series: str
    input: str
    output: str
    status: str = "pending"
    error: str | None = None
    n_slices: int | None = None
    resumed: int = 0
    computed: set[int] = field(default_factory=set)
    tasks: int = 0
    retries: int = 0
    workers: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.perf_counter)
    seconds: float | None = None

    def row(self) -> dict[str, Any]:
        """JSON form for the aggregated report."""
        return {
            "series": self.series,
            "input": self.input,
            "output": self.output,
            "status": self.status,
            "error": self.error,
            "n_slices": self.n_slices,
            "slices_resumed": self.resumed,
            "slices_computed": len(self.computed),
            "tasks": self.tasks,
            "retries": self.retries,
            "workers": sorted(self.workers),
            "seconds": self.seconds,
        }


def chunk_ranges(n_slices: int, todo: Iterable[int], batch_size: int, chunk_slices: int) -> list[tuple[int, int]]:
    """``[start, stop)`` chunks of a series of ``n_slices`` that contain a slice of ``todo``.

    Boundaries are multiples of ``chunk_slices`` rounded up to a multiple of ``batch_size``, so each
    chunk is made of whole batches of the serial run (module docstring).
    """
    if batch_size < 1 or chunk_slices < 1:
        raise ValueError(f"batch_size and chunk_slices must be >= 1, got {batch_size} and {chunk_slices}")
    size = math.ceil(chunk_slices / batch_size) * batch_size
    wanted = set(todo)
    return [
        (start, min(start + size, n_slices))
        for start in range(0, n_slices, size)
        if wanted.intersection(range(start, min(start + size, n_slices)))
    ]


def worker_name() -> str:
    """``host:pid`` of this process (how the report names a worker)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def write_marker(output: Path) -> Path:
    """Create ``output`` and a marker file in it holding a fresh token; returns its path."""
    output.mkdir(parents=True, exist_ok=True)
    marker = output / f"{MARKER_PREFIX}{uuid.uuid4().hex}"
    marker.write_text(json.dumps({"driver": worker_name()}))
    return marker


def check_marker(marker: Path) -> None:
    """Raise :class:`SharedStorageError` unless this process can read the driver's ``marker``."""
    try:
        json.loads(marker.read_text())["driver"]
    except (OSError, ValueError, KeyError) as err:
        raise SharedStorageError(
            f"worker {worker_name()} cannot read {marker}, which the driver wrote into OUTPUT: OUTPUT "
            f"({marker.parent}) must be on a file system every node mounts at the same path (NFS, Lustre, ...); "
            "choose such an OUTPUT"
        ) from err


class StudyWorker:
    """Runs the plan / chunk / finish steps of series; the prior is loaded once, at construction.

    The serial CLI's series runner (:class:`resample_med.cli.reconstruct.SeriesRunner`) does the
    loading, the checkpoint fingerprint and the outputs, so both executors write the same files.
    The last loaded input is kept, so the chunks of a series that land on this worker load it once.
    A worker that cannot start (OUTPUT not visible, prior not loadable) raises the reason from
    :meth:`ready`, so that a Ray driver gets it as the task's error rather than as a dead actor.
    """

    def __init__(self, settings: StudySettings, marker: str | None = None) -> None:
        import torch

        from resample_med.cli import common
        from resample_med.cli.outputs import OutputSession
        from resample_med.cli.reconstruct import InputOptions, SeriesRunner
        from resample_med.sampling.registry import needs_prior

        self.settings = settings
        self.name = worker_name()
        self._error: Exception | None = None
        self._cache: tuple[Any, Any] | None = None
        if settings.threads is not None:
            torch.set_num_threads(settings.threads)
        device = torch.device(settings.device)
        recon = settings.config.reconstruction
        prior = None
        try:
            if marker is not None:
                check_marker(Path(marker))
            prior = common.load_prior(recon.model, device) if needs_prior(recon.method) else None
        except Exception as err:  # noqa: BLE001 - handed to the driver by ready()
            self._error = err
        worker = self

        class CachingRunner(SeriesRunner):
            def _load(self, job: Any) -> Any:
                key = (str(job.path), None if job.series is None else job.series.uid)
                if worker._cache is None or worker._cache[0] != key:
                    worker._cache = None  # free the previous input before loading the next
                    worker._cache = (key, super()._load(job))
                return worker._cache[1]

        class DriverLockedSession(OutputSession):
            """OUTPUT as a worker uses it: the driver holds OUTPUT's lock for the whole run, so a
            worker neither checks nor takes it; series folders are checked and prepared as usual."""

            def __init__(self, root: Path) -> None:
                self.root = root
                self._stack = contextlib.ExitStack()
                self.created = True

        # overwrite is applied once, by plan(): the chunks and the finish step must keep the checkpoint
        self.runner = CachingRunner(
            settings.config,
            device,
            settings.preset,
            settings.sampler,
            prior,
            overwrite=False,
            options=settings.options or InputOptions(),
            session=DriverLockedSession(Path(settings.output)),
        )

    def ready(self) -> str:
        """This worker's name, or the error that kept it from starting."""
        if self._error is not None:
            raise self._error
        return self.name

    def plan(self, job: Any) -> SeriesPlan | dict[str, Any]:
        """Open the series' checkpoint and list its unfinished chunks.

        Returns:
            a :class:`SeriesPlan`, or the runner's status dict when the series needs no work
            (already reconstructed with the same fingerprint: ``skipped``).

        Raises:
            CheckpointMismatchError: OUTPUT holds this series made from another input or settings.
        """
        from resample_med.cli.outputs import finished
        from resample_med.cli.reconstruct import OWNED_OUTPUTS, PARTIAL_DIR, REPORT_FILE

        runner, overwrite = self.runner, self.settings.overwrite
        out = runner.session.series_folder(job.label)
        current = runner.fingerprint(job)
        if finished(out, REPORT_FILE, current, overwrite) and not overwrite:
            with _quiet():
                return runner.run_job(job)
        source = runner._load(job)
        runner.session.prepare(out, OWNED_OUTPUTS, overwrite)
        checkpoint = SliceCheckpoint.open(out / PARTIAL_DIR, current, restart=overwrite)
        fold_chunks(checkpoint)
        n_slices = source.n_slices
        done = checkpoint.done()
        todo = [i for i in range(n_slices) if i not in done]
        recon = self.settings.config.reconstruction
        chunks = chunk_ranges(n_slices, todo, recon.batch_size, self.settings.chunk_slices)
        return SeriesPlan(n_slices, tuple(sorted(done)), tuple(chunks), checkpoint)

    def run_chunk(self, job: Any, checkpoint: SliceCheckpoint, start: int, stop: int) -> ChunkResult:
        """Reconstruct slices ``[start, stop)`` of ``job``; ``checkpoint`` is the series' (as planned)."""
        from resample_med.pipeline.measurements import Measurements
        from resample_med.pipeline.slices import reconstruct_slices
        from resample_med.pipeline.volume import reconstruct_volume, select_slices

        started = time.perf_counter()
        recon = self.settings.config.reconstruction
        chunk = ChunkCheckpoint(checkpoint, start, stop, recon.batch_size)
        source = self.runner._load(job)
        common_args = dict(
            method=recon.method,
            prior=self.runner.prior,
            config=self.settings.sampler,
            batch_size=recon.batch_size,
            n_samples=recon.n_samples,
            seed=recon.seed,
            checkpoint=chunk,
            first_index=start,
        )
        if isinstance(source, Measurements):
            rows = reconstruct_slices(source.select(slice(start, stop)), **common_args).per_slice
        else:
            rows = reconstruct_volume(
                select_slices(source, slice(start, stop)),
                self.settings.config.acquisition,
                device=self.runner.device,
                **common_args,
            ).per_slice
        computed = tuple(int(r["index"]) for r in rows if not r["resumed"])
        return ChunkResult(start, stop, computed, time.perf_counter() - started, self.name, socket.gethostname())

    def finish(
        self, job: Any, checkpoint: SliceCheckpoint, computed: list[int], executor: dict[str, Any]
    ) -> dict[str, Any]:
        """Fold the chunks into the series' ``checkpoint``, assemble the series and write its outputs.

        ``computed`` are the slices this run's tasks reconstructed; the series report marks only the
        others as ``resumed`` and gets an ``executor`` section.
        """
        from resample_med.cli.outputs import write_json
        from resample_med.cli.reconstruct import REPORT_FILE

        fold_chunks(SliceCheckpoint.open(checkpoint.folder, checkpoint.fingerprint))
        with _quiet():
            status = self.runner.run_job(job)
        report_path = Path(status.get("output", "")) / REPORT_FILE
        if status.get("status") == "done" and report_path.is_file():
            report = json.loads(report_path.read_text())
            fresh = set(computed)
            for row in report.get("per_slice", []):
                row["resumed"] = int(row["index"]) not in fresh
            seconds = [r["seconds"] for r in report.get("per_slice", []) if not r["resumed"]]
            report.setdefault("timings", {}).update(
                slices_computed_this_run=len(seconds),
                seconds_per_slice=sum(seconds) / len(seconds) if seconds else None,
            )
            report["executor"] = executor
            write_json(report_path, report)
        return status


CHUNKS_DIR = "chunks"
"""Sub-folder of a series' checkpoint folder holding one checkpoint per chunk (``START-STOP``)."""


def _chunk_folders(series: SliceCheckpoint) -> list[Path]:
    """The chunk checkpoints beside ``series``."""
    return sorted(p for p in (series.folder / CHUNKS_DIR).glob("*-*") if p.is_dir())


def fold_chunks(series: SliceCheckpoint) -> None:
    """Move every slice of the chunk checkpoints into ``series`` (its only writer at that moment)."""
    for folder in _chunk_folders(series):
        chunk = SliceCheckpoint.open(folder, series.fingerprint)
        for index in sorted(chunk.done()):
            series.save(index, *chunk.load(index))
        chunk.clear()


class ChunkCheckpoint:
    """Slices ``[start, stop)`` of a series: read from the series' checkpoint or the chunk's own,
    written to the chunk's own (``<series>/chunks/START-STOP``), so concurrent chunks never write the
    same checkpoint. Only whole batches count as done: a batch that is partly done (a worker killed
    while saving it) is recomputed whole, with the slices and sampler seed of the serial run.
    """

    def __init__(self, series: SliceCheckpoint, start: int, stop: int, batch_size: int) -> None:
        self.series = series
        self.own = SliceCheckpoint.open(series.folder / CHUNKS_DIR / f"{start}-{stop}", series.fingerprint)
        own_done = self.own.done()
        finished = (series.done() | own_done) & set(range(start, stop))
        batches = [set(range(first, min(first + batch_size, stop))) for first in range(start, stop, batch_size)]
        self._done = set().union(*(b for b in batches if b <= finished))
        self._own_done = own_done

    def done(self) -> set[int]:
        """Series indices of the chunk's slices in whole finished batches."""
        return set(self._done)

    def load(self, index: int) -> tuple[Any, Any, dict[str, Any]]:
        """``(hu, std_hu or None, row)`` of a finished slice, from wherever it is."""
        return (self.own if index in self._own_done else self.series).load(index)

    def save(self, index: int, hu: Any, std_hu: Any, row: dict[str, Any]) -> None:
        """Store a slice in the chunk's own checkpoint."""
        self.own.save(index, hu, std_hu, row)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the serial runner's console messages (progress bars, "resuming ...") out of the
    workers' output: the driver reports progress and errors from the steps' results."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def reconstruct_studies(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: Any = None,
    *,
    executor: str = "local",
    address: str | None = None,
    workers: int | None = None,
    gpus_per_task: float | None = None,
    cpus_per_worker: int = 1,
    chunk_slices: int = DEFAULT_CHUNK_SLICES,
    max_retries: int = DEFAULT_MAX_RETRIES,
    series: str | None = None,
    series_description: str | None = None,
    all_series: bool = False,
    slices: str | None = None,
    skip_bad_slices: bool = False,
    fill_nonfinite: float | None = None,
    overwrite: bool = False,
    on_event: EventCallback | None = None,
) -> dict[str, Any]:
    """Reconstruct every series under ``input`` into ``output``; returns the aggregated report.

    Args:
        input: a folder of studies, one study folder, a DICOM, NIfTI or sinogram file.
        output: output folder; with ``executor="ray"`` it must be on a file system every node sees.
        config: a :class:`~resample_med.config.RunConfig` (``None``: defaults), as ``--config`` gives.
        executor: ``"local"`` (this process) or ``"ray"``.
        address: Ray cluster to join (``"auto"``, ``"ray://HOST:PORT"``); ``None`` starts a local Ray.
        workers: Ray workers to start; ``None`` = one per GPU (``gpus_per_task`` each) or per CPU.
        gpus_per_task: GPUs per Ray worker; ``None`` = 1 if the cluster has GPUs, else 0 (CPU workers).
        cpus_per_worker: CPUs reserved by each Ray worker, and its torch threads.
        chunk_slices: slices per task (rounded up to a multiple of the batch size).
        max_retries: retries of a failed task before its series is reported failed.
        series, series_description, all_series, slices, skip_bad_slices, fill_nonfinite, overwrite:
            as the CLI's ``--series``, ``--series-description``, ``--all-series``, ``--slices``,
            ``--skip-bad-slices``, ``--fill-nonfinite``, ``--overwrite``.
        on_event: progress callback on the driver (:data:`EventCallback`).

    Returns:
        the aggregated report (also written to ``output/report.json`` when there are several
        series): ``executor``, ``config``, ``counts`` and one row per series.

    Raises:
        ConfigError: unknown executor or method, or Ray is not installed for ``executor="ray"``.
        OutputPathError: ``output`` is unsafe, or another run holds it (``OutputInUseError``).
        SharedStorageError: a Ray worker cannot see ``output``.
    """
    from resample_med.cli import common
    from resample_med.cli.inputs import find_jobs
    from resample_med.cli.outputs import write_json
    from resample_med.cli.reconstruct import SUMMARY_FILE, InputOptions
    from resample_med.config import RunConfig, resolve_device
    from resample_med.io.nifti import is_nifti
    from resample_med.io.output_paths import OutputLock, check_output_folder, remove_stale_temporaries
    from resample_med.pipeline.sinogram_file import is_sinogram_file

    if executor not in EXECUTORS:
        raise common.ConfigError(f"unknown executor {executor!r}; choose from {list(EXECUTORS)}")
    if max_retries < 0 or chunk_slices < 1 or cpus_per_worker < 1:
        raise common.ConfigError(
            f"max_retries must be >= 0, chunk_slices and cpus_per_worker >= 1; got {max_retries}, "
            f"{chunk_slices} and {cpus_per_worker}"
        )
    if executor == "ray":
        from resample_med.pipeline import ray_executor

        ray = ray_executor.import_ray()  # fails first, in one line, where Ray is missing
    config = config or RunConfig()
    source = Path(input).resolve()
    jobs = find_jobs(
        source, series, all_series, description=series_description, reserved=[SUMMARY_FILE, AGGREGATE_REPORT]
    )
    is_file_input = source.is_file() and (is_nifti(source) or is_sinogram_file(source))
    output = check_output_folder(Path(output), [source if source.is_dir() or is_file_input else source.parent])
    OutputLock.check_free(output)
    options = InputOptions(slices, skip_bad_slices, fill_nonfinite)
    records = [SeriesRecord(job.name, str(job.path), str(output / job.label)) for job in jobs]
    started = time.perf_counter()
    with OutputLock(output):  # held by the driver for the whole run, on behalf of every worker
        remove_stale_temporaries(output)
        if executor == "local":
            device = resolve_device(config.reconstruction.device)
            settings = study_settings(config, str(device), str(output), options, overwrite, chunk_slices)
            info: dict[str, Any] = {"name": "local", "workers": 1, "host": socket.gethostname()}
            worker = StudyWorker(settings)
            worker.ready()
            _run_local(jobs, records, worker, info, on_event)
        else:
            info = ray_executor.run(
                ray,
                jobs,
                records,
                output,
                config,
                options=options,
                overwrite=overwrite,
                address=address,
                workers=workers,
                gpus_per_task=gpus_per_task,
                cpus_per_worker=cpus_per_worker,
                chunk_slices=chunk_slices,
                max_retries=max_retries,
                on_event=on_event,
            )
        info.update(chunk_slices=chunk_slices, max_retries=max_retries)
        report = _aggregate(info, source, output, config, records, time.perf_counter() - started)
        if any(job.label for job in jobs):
            write_json(output / AGGREGATE_REPORT, report)
    return report


def _aggregate(
    info: dict[str, Any], source: Path, output: Path, config: Any, records: list[SeriesRecord], seconds: float
) -> dict[str, Any]:
    """The aggregated report of a run."""
    return {
        "executor": info,
        "input": str(source),
        "output": str(output),
        "config": config.to_dict(),
        "seconds_total": seconds,
        "counts": {s: sum(r.status == s for r in records) for s in ("done", "skipped", "failed")},
        "series": [r.row() for r in records],
    }


def study_settings(
    config: Any, device: str, output: str, options: Any, overwrite: bool, chunk_slices: int, threads: int | None = None
) -> StudySettings:
    """Resolve preset and sampler config for ``device`` (as the serial CLI does)."""
    import torch

    from resample_med.cli import common
    from resample_med.sampling import METHODS

    method = config.reconstruction.method
    if method not in METHODS:
        raise common.ConfigError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    preset = common.resolve_preset(config.reconstruction.preset, torch.device(device))
    sampler = common.sampler_config(method, preset, config.sampler)
    reconstruction = dataclasses.replace(config.reconstruction, device=device)
    return StudySettings(
        dataclasses.replace(config, reconstruction=reconstruction),
        device,
        preset,
        sampler,
        output,
        options,
        overwrite,
        chunk_slices,
        threads,
    )


def _run_local(
    jobs: list[Any],
    records: list[SeriesRecord],
    worker: StudyWorker,
    info: dict[str, Any],
    on_event: EventCallback | None,
) -> None:
    """The local executor: every step of every series in this process, one after the other."""
    for job, record in zip(jobs, records):
        if job.error is not None:
            fail(record, job.error, on_event)
            continue
        record.started = time.perf_counter()
        try:
            plan = worker.plan(job)
            if not isinstance(plan, SeriesPlan):
                settle(record, plan, on_event)
                continue
            planned(record, plan, on_event)
            for start, stop in plan.chunks:
                record.tasks += 1
                chunk_done(record, worker.run_chunk(job, plan.checkpoint, start, stop), on_event)
            settle(record, worker.finish(job, plan.checkpoint, sorted(record.computed), info), on_event)
        except INPUT_ERRORS as err:  # one series' bad input must not stop the others
            fail(record, err, on_event)


def _emit(on_event: EventCallback | None, event: str, record: SeriesRecord, **details: Any) -> None:
    if on_event is not None:
        on_event({"event": event, "series": record.series, **details})


def planned(record: SeriesRecord, plan: SeriesPlan, on_event: EventCallback | None) -> None:
    """Record a series' plan on the driver."""
    record.n_slices, record.resumed = plan.n_slices, len(plan.done)
    _emit(on_event, "planned", record, n_slices=plan.n_slices, resumed=len(plan.done), chunks=len(plan.chunks))


def chunk_done(record: SeriesRecord, result: ChunkResult, on_event: EventCallback | None, **details: Any) -> None:
    """Record a finished chunk on the driver (``details`` go into the event)."""
    record.computed.update(result.computed)
    record.workers.add(result.worker)
    _emit(
        on_event,
        "chunk_done",
        record,
        start=result.start,
        stop=result.stop,
        computed=len(result.computed),
        seconds=result.seconds,
        worker=result.worker,
        **details,
    )


def settle(record: SeriesRecord, status: dict[str, Any], on_event: EventCallback | None) -> None:
    """Record the runner's final status of a series (``done``, ``skipped`` or ``failed``)."""
    record.status, record.error = status["status"], status.get("error")
    record.seconds = time.perf_counter() - record.started
    _emit(
        on_event,
        "series_failed" if record.status == "failed" else "series_done",
        record,
        status=record.status,
        error=record.error,
    )


def fail(record: SeriesRecord, error: BaseException | str, on_event: EventCallback | None) -> None:
    """Mark a series failed with ``error`` (its other tasks are dropped by the executor)."""
    settle(record, {"status": "failed", "error": str(error)}, on_event)
