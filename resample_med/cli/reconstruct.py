"""``resample-med reconstruct INPUT OUTPUT``: batch reconstruction of DICOM, NIfTI or sinogram inputs.

For each series found under INPUT (a DICOM folder or file, a folder of studies, a NIfTI file or a
sinogram file written by ``resample-med simulate``) the output folder
(``OUTPUT`` for a single series, ``OUTPUT/<study>[_<series>]`` otherwise) receives

* ``dicom/``: the derived DICOM series (same frame of reference and geometry as the source;
  reconstructed on the 256x256 model grid and interpolated back, as its header says);
* ``std_dicom/``: with ``--n-samples`` > 1, the posterior std map as its own derived series;
* ``report.json``: parameters, resolved configuration, model, versions, timings, per-slice
  residual and, the input being the ground truth of the simulation, PSNR / SSIM / HU-RMSE;
* ``config.yaml``: the resolved configuration (``--config`` it to repeat the run);
* optionally ``reconstruction.nii.gz`` (+ ``std.nii.gz``) and ``preview.png`` (+ ``std.png``),
  a contact sheet of up to 9 slices in the ``--window``.

While running, finished slices are kept in ``.partial/``; after Ctrl-C the same command resumes
(``--overwrite`` starts over). Input folders are never written to; OUTPUT is created once the first
input has loaded and is locked against a second run. A finished output is only reused for the
same input and settings. ``--list-series`` shows the series of INPUT, ``--dry-run`` what would be
read and written; neither writes anything. Each series ends with one line of metrics; ``--json``
prints a machine-readable summary on stdout instead of the messages, ``--quiet`` prints nothing
but errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from resample_med.cli import cluster, common
from resample_med.config import ConfigError, RunConfig, load_config_file, resolve_config, resolve_device
from resample_med.io.errors import DicomInputError, NonFiniteError, OutputInUseError, OutputPathError
from resample_med.io.preview import CLI_WINDOWS
from resample_med.io.volume import CTVolume
from resample_med.pipeline.acquisition import ACQUISITION_PRESETS, GEOMETRY_KINDS
from resample_med.pipeline.checkpoint import CheckpointMismatchError
from resample_med.sampling.names import METHODS

if TYPE_CHECKING:  # the heavy modules (torch, MONAI) are imported when a run starts, not for --help
    import torch

    from resample_med.cli.inputs import Job
    from resample_med.cli.outputs import OutputSession
    from resample_med.sampling.prior import LatentPrior
    from resample_med.sampling.registry import MethodConfig
    from resample_med.sampling.result import ProgressEvent

PARTIAL_DIR = ".partial"
REPORT_FILE = "report.json"
CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
DICOM_DIR = "dicom"
STD_DICOM_DIR = "std_dicom"
NIFTI_FILE = "reconstruction.nii.gz"
STD_NIFTI_FILE = "std.nii.gz"
PNG_FILE = "preview.png"
STD_PNG_FILE = "std.png"
STD_WINDOW = "uncertainty"
"""Display window of posterior std maps (0 to 100 HU)."""
NOISELESS = "none"
"""``--photons none``: no Poisson noise."""
OWNED_OUTPUTS = (
    DICOM_DIR,
    STD_DICOM_DIR,
    REPORT_FILE,
    CONFIG_FILE,
    NIFTI_FILE,
    STD_NIFTI_FILE,
    PNG_FILE,
    STD_PNG_FILE,
    PARTIAL_DIR,
)
"""What a run writes in a series' output folder (and ``--overwrite`` removes)."""
JOB_ERRORS = (DicomInputError, OutputPathError, CheckpointMismatchError, NonFiniteError, ConfigError)
"""Problems of one series: reported, the series fails, the others go on."""


def add_acquisition_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the simulated acquisition (shared by ``reconstruct`` and ``simulate``)."""
    group = parser.add_argument_group("acquisition (simulated sparse-view scan)")
    group.add_argument(
        "--acquisition",
        metavar="PRESET",
        choices=sorted(ACQUISITION_PRESETS),
        help=f"named acquisition: {', '.join(sorted(ACQUISITION_PRESETS))} (default sparse-30)",
    )
    group.add_argument("--geometry", choices=GEOMETRY_KINDS, help="beam geometry")
    group.add_argument("--views", type=int, dest="n_views", metavar="N", help="number of projection views")
    group.add_argument(
        "--photons",
        type=_photons,
        metavar="I0",
        help="incident photons per ray for Poisson noise; 'none' for noiseless data",
    )
    group.add_argument("--gaussian-sigma", type=float, metavar="S", help="additive Gaussian noise std (post-log)")
    group.add_argument("--arc", type=float, dest="arc_deg", metavar="DEG", help="limited-angle arc in degrees")
    group.add_argument("--det-count", type=int, metavar="N", help="detector bins (default: cover the image)")
    group.add_argument("--det-spacing", type=float, dest="det_spacing_mm", metavar="MM", help="detector bin width")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``reconstruct``."""
    parser = subparsers.add_parser(
        "reconstruct",
        help="reconstruct DICOM / NIfTI / sinogram inputs in batch",
        description=common.plain_help(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "input",
        type=Path,
        metavar="INPUT",
        help="DICOM folder, folder of studies, DICOM file, NIfTI file, or sinogram file",
    )
    parser.add_argument(
        "output",
        type=Path,
        metavar="OUTPUT",
        nargs="?",
        help="output folder (created when the input has loaded; not needed with --list-series)",
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="YAML or JSON config file (options override it)")
    parser.add_argument("--series", metavar="UID|NUMBER", help="series to use: SeriesInstanceUID or SeriesNumber")
    parser.add_argument(
        "--series-description",
        metavar="TEXT",
        help="series to use: the one whose SeriesDescription contains TEXT (case-insensitive)",
    )
    parser.add_argument("--all-series", action="store_true", help="reconstruct every axial CT series of each study")
    parser.add_argument("--list-series", action="store_true", help="list the series of INPUT and exit")
    parser.add_argument("--dry-run", action="store_true", help="say what would be read and written, write nothing")
    parser.add_argument("--slices", metavar="START:STOP", help="reconstruct only this slice range of each series")
    parser.add_argument(
        "--skip-bad-slices",
        action="store_true",
        help="reconstruct a DICOM series without its unreadable files (listed in report.json) instead of refusing it",
    )
    parser.add_argument(
        "--fill-nonfinite",
        type=float,
        metavar="HU",
        help="replace NaN/Inf voxels of a NIfTI input by this HU value instead of refusing it",
    )
    add_acquisition_arguments(parser)
    group = parser.add_argument_group("reconstruction")
    group.add_argument("--method", choices=sorted(METHODS), help="reconstruction method (default resample)")
    group.add_argument(
        "--preset", help="method preset, e.g. fast | default | paper (default: fast on CPU, default on CUDA)"
    )
    group.add_argument("--steps", type=int, metavar="S", help="sampling steps (overrides the preset)")
    group.add_argument(
        "--gamma",
        type=float,
        metavar="GAMMA",
        help="ReSample's resampling variance scale gamma (overrides the preset, e.g. 40)",
    )
    group.add_argument("--sigma2", type=float, metavar="GAMMA", help="deprecated name of --gamma")
    group.add_argument("--n-samples", type=int, metavar="K", help="posterior samples per slice (>1 adds a std map)")
    group.add_argument("--batch-size", type=int, metavar="B", help="slices reconstructed together (default 4)")
    group.add_argument(
        "--volume-mode",
        action="store_true",
        default=None,
        help="reconstruct adjacent slices jointly, consistent along z (resample*, tv)",
    )
    group.add_argument(
        "--z-weight",
        type=float,
        metavar="W",
        help="volume mode's z weight for 1 mm slices, scaled to the series' slice spacing (default: the tuned one)",
    )
    group.add_argument("--seed", type=int, help="seed of noise and sampling (default 0)")
    group.add_argument("--device", help="cpu | cuda | cuda:N | auto (default auto)")
    group.add_argument("--model", metavar="DIR", help="model bundle folder (default: the shipped model)")
    group.add_argument("--threads", type=int, metavar="N", help="CPU threads of torch (default: torch's choice)")
    group = parser.add_argument_group("outputs")
    group.add_argument("--nifti", action="store_true", default=None, help="also write reconstruction.nii.gz")
    group.add_argument(
        "--png", action="store_true", default=None, help="also write preview.png, a contact sheet of up to 9 slices"
    )
    group.add_argument(
        "--window",
        choices=CLI_WINDOWS,
        default="soft-tissue",
        help="display window of the PNG previews (default soft-tissue)",
    )
    group.add_argument("--overwrite", action="store_true", help="redo finished or partial outputs")
    group = parser.add_argument_group("messages")
    group.add_argument(
        "--json",
        action="store_true",
        dest="json_summary",
        help="print a machine-readable summary on stdout (messages go to stderr)",
    )
    group.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    cluster.add_arguments(parser)
    parser.set_defaults(handler=run)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Resolve defaults < acquisition preset < ``--config`` file < options."""
    file_data = load_config_file(args.config) if args.config else None
    acquisition = _given(
        geometry=args.geometry,
        n_views=args.n_views,
        photons=args.photons,
        gaussian_sigma=args.gaussian_sigma,
        arc_deg=args.arc_deg,
        det_count=args.det_count,
        det_spacing_mm=args.det_spacing_mm,
    )
    if acquisition.get("photons") == NOISELESS or ("gaussian_sigma" in acquisition and "photons" not in acquisition):
        acquisition["photons"] = None  # noiseless, or Gaussian noise instead of the preset's Poisson noise
    overrides = {
        "acquisition_preset": _given(name=args.acquisition),
        "acquisition": acquisition,
        "reconstruction": _given(
            method=getattr(args, "method", None),
            preset=getattr(args, "preset", None),
            n_samples=getattr(args, "n_samples", None),
            batch_size=getattr(args, "batch_size", None),
            volume_mode=getattr(args, "volume_mode", None),
            z_weight=getattr(args, "z_weight", None),
            seed=args.seed,
            device=getattr(args, "device", None),
            model=getattr(args, "model", None),
        ),
        "sampler": _given(
            steps=getattr(args, "steps", None), gamma=getattr(args, "gamma", None), sigma2=getattr(args, "sigma2", None)
        ),
        "output": _given(nifti=getattr(args, "nifti", None), png=getattr(args, "png", None)),
    }
    return resolve_config(file_data, overrides, source=str(args.config or "command line"))


def _given(**values: Any) -> dict[str, Any]:
    """The options the user gave (argparse leaves the others ``None``)."""
    return {key: value for key, value in values.items() if value is not None}


def _photons(text: str) -> float | str:
    """``--photons`` value: a positive number or ``none``."""
    if text.lower() == NOISELESS:
        return NOISELESS
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("photons must be > 0 (or 'none' for noiseless data)")
    return value


@dataclass(frozen=True)
class Console:
    """Where messages go: ``quiet`` keeps errors only; ``json`` moves messages to stderr (stdout is the summary)."""

    quiet: bool = False
    json: bool = False

    def info(self, message: str) -> None:
        """A progress or result message."""
        if not self.quiet:
            tqdm.write(message, file=sys.stderr if self.json else sys.stdout)

    def error(self, message: str) -> None:
        """An error: always shown, on stderr."""
        tqdm.write(message, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Reconstruct every series under ``args.input``; returns the exit code."""
    console = Console(quiet=args.quiet, json=args.json_summary)
    with warnings.catch_warnings():
        if args.quiet:
            warnings.simplefilter("ignore")
        return _run(args, console)


def _run(args: argparse.Namespace, console: Console) -> int:
    """:func:`run` with the messages going to ``console``."""
    import torch

    from resample_med.cli.inputs import find_jobs, list_series
    from resample_med.cli.outputs import OutputSession, write_json
    from resample_med.io.nifti import is_nifti
    from resample_med.io.output_paths import check_output_folder
    from resample_med.pipeline.sinogram_file import is_sinogram_file
    from resample_med.sampling.registry import needs_prior

    if args.list_series:
        print("\n".join(list_series(args.input)))
        return common.EXIT_OK
    if args.output is None:
        raise ConfigError("give the OUTPUT folder (only --list-series runs without one)")
    if args.threads is not None:
        if args.threads < 1:
            raise common.ConfigError(f"--threads {args.threads}: give at least 1")
        torch.set_num_threads(args.threads)
    config = config_from_args(args)
    if cluster.wanted(args):
        return cluster.run(args, config)
    device = resolve_device(config.reconstruction.device)
    method = config.reconstruction.method
    if method not in METHODS:
        raise common.ConfigError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    preset = common.resolve_preset(config.reconstruction.preset, device)
    common.volume_mode(config.reconstruction)  # refuse a bad volume-mode request before any work
    sampler = common.sampler_config(method, preset, config.sampler)
    jobs = find_jobs(
        args.input, args.series, args.all_series, description=args.series_description, reserved=[SUMMARY_FILE]
    )
    source = args.input.resolve()
    is_file_input = source.is_file() and (is_nifti(source) or is_sinogram_file(source))
    out = check_output_folder(args.output, [source if source.is_dir() or is_file_input else source.parent])
    options = InputOptions(args.slices, args.skip_bad_slices, args.fill_nonfinite)
    with OutputSession(out) as session:
        if args.dry_run:
            runner = SeriesRunner(config, device, preset, sampler, None, args.overwrite, options, session)
            for job in jobs:
                print("\n".join(runner.plan(job)))
            return common.EXIT_OK
        prior = common.load_prior(config.reconstruction.model, device) if needs_prior(method) else None
        runner = SeriesRunner(
            config, device, preset, sampler, prior, args.overwrite, options, session, args.window, console
        )
        statuses: list[dict[str, Any]] = []
        for job in tqdm(jobs, desc="series", unit="series", disable=len(jobs) < 2 or args.quiet):
            statuses.append(runner.run_job(job))
        failed = [s for s in statuses if s["status"] == "failed"]
        if len(jobs) > 1 and session.created:
            write_json(out / SUMMARY_FILE, statuses)
            console.info(
                f"{len(jobs) - len(failed)} of {len(jobs)} series reconstructed; summary in {out / SUMMARY_FILE}"
            )
    if not failed:
        code = common.EXIT_OK
    else:
        code = common.EXIT_BAD_INPUT if len(failed) == len(jobs) else common.EXIT_PARTIAL
    if args.json_summary:
        print(
            json.dumps(
                {
                    "exit_code": code,
                    "method": method,
                    "preset": preset,
                    "device": str(device),
                    "output": str(out),
                    "series": statuses,
                },
                indent=2,
            )
        )
    return code


@dataclasses.dataclass(frozen=True)
class InputOptions:
    """How inputs are read: ``--slices``, ``--skip-bad-slices``, ``--fill-nonfinite``."""

    slices: str | None = None
    skip_bad_slices: bool = False
    fill_nonfinite: float | None = None


class SeriesRunner:
    """Runs one job at a time with the shared configuration, prior and sampler config, into ``session``'s OUT."""

    def __init__(
        self,
        config: RunConfig,
        device: torch.device,
        preset: str,
        sampler: MethodConfig,
        prior: LatentPrior | None,
        overwrite: bool,
        options: InputOptions,
        session: OutputSession,
        window: str = "soft-tissue",
        console: Console | None = None,
    ) -> None:
        self.config = config
        self.device = device
        self.preset = preset
        self.sampler = sampler
        self.prior = prior
        self.prior_weights = common.prior_weights_digest(prior)
        self.overwrite = overwrite
        self.options = options
        self.session = session
        self.window = window
        self.console = console or Console()

    @property
    def n_samples(self) -> int:
        """Posterior samples per slice: the user's count, else the sampler config's."""
        from resample_med.sampling.config import posterior_samples  # the sampler stack imports torch

        return posterior_samples(self.sampler, self.config.reconstruction.n_samples)

    def resolved_config(self) -> RunConfig:
        """The configuration as run: preset and posterior samples resolved, every sampler setting spelled out."""
        reconstruction = dataclasses.replace(self.config.reconstruction, preset=self.preset, n_samples=self.n_samples)
        return dataclasses.replace(self.config, reconstruction=reconstruction, sampler=common.config_dict(self.sampler))

    def fingerprint(self, job: Job) -> dict[str, Any]:
        """Everything the slices of ``job`` depend on (:func:`resample_med.cli.outputs.fingerprint`)."""
        from resample_med.cli.outputs import fingerprint

        recon = self.config.reconstruction
        return fingerprint(
            job,
            {
                "slices": self.options.slices,
                "skip_bad_slices": self.options.skip_bad_slices,
                "fill_nonfinite": self.options.fill_nonfinite,
                "acquisition": None if job.kind == "sinogram" else self.config.acquisition.to_dict(),
                "method": recon.method,
                "preset": self.preset,
                "sampler": common.config_dict(self.sampler),
                "model": recon.model,
                "model_weights": self.prior_weights,
                "seed": recon.seed,
                "n_samples": self.n_samples,
                "batch_size": recon.batch_size,
                "volume_mode": None if common.volume_mode(recon) is None else common.volume_mode(recon).to_dict(),
            },
        )

    def run_job(self, job: Job) -> dict[str, Any]:
        """Reconstruct ``job`` into its folder of OUT; a bad input or output is reported and returned as failed."""
        from resample_med.cli.outputs import finished

        status: dict[str, Any] = {"series": job.name, "input": str(job.path)}
        try:
            if job.error is not None:
                raise job.error
            out_dir = self.session.series_folder(job.label)
            status["output"] = str(out_dir)
            current = self.fingerprint(job)
            if finished(out_dir, REPORT_FILE, current, self.overwrite) and not self.overwrite:
                self.console.info(f"{job.name or out_dir}: already reconstructed in {out_dir} (--overwrite redoes it)")
                report = json.loads((out_dir / REPORT_FILE).read_text())
                return {**status, "status": "skipped", **_summary(report)}
            report = self._reconstruct(job, out_dir, current)
        except OutputInUseError:
            raise
        except JOB_ERRORS as err:
            self.console.error(f"error: {err}")
            return {**status, "status": "failed", "error": str(err)}
        self.console.info(f"{job.name or job.path}: wrote {', '.join(report['outputs'])}")
        self.console.info(metrics_line(job.name or str(job.path), report))
        return {**status, "status": "done", **_summary(report)}

    def plan(self, job: Job) -> list[str]:
        """What running ``job`` would read and write (``--dry-run``), as lines."""
        if job.error is not None:
            return [f"{job.name}: would fail: {job.error}"]
        out_dir = self.session.series_folder(job.label)
        if job.series is not None:
            read = f"read {job.series.n_slices} file(s) of series {job.series.summary()} in {job.path}"
            if job.series.bad_files:
                read += f"; {len(job.series.bad_files)} bad file(s) there would be refused (--skip-bad-slices)"
        else:
            read = f"read {job.path}"
        written = [DICOM_DIR + "/", REPORT_FILE, CONFIG_FILE]
        if self.n_samples > 1:
            written.append(STD_DICOM_DIR + "/")
        if self.config.output.nifti or job.kind == "sinogram":
            written.append(NIFTI_FILE)
        if self.config.output.png:
            written.append(PNG_FILE)
        from resample_med.cli.outputs import finished

        try:
            done = finished(out_dir, REPORT_FILE, self.fingerprint(job), self.overwrite)
        except CheckpointMismatchError as err:
            action = f"would refuse: {err}"
        else:
            replace = " (replacing the earlier output, --overwrite)" if (out_dir / REPORT_FILE).exists() else ""
            action = "already reconstructed, nothing to do" if done else f"would reconstruct{replace}"
        return [f"{job.name or job.path}:", f"  {read}", f"  write {out_dir}/ ({', '.join(written)})", f"  {action}"]

    def _load(self, job: Job) -> Any:
        """The input of ``job``: measurements of a sinogram file, else a :class:`CTVolume`, cut to ``--slices``."""
        from resample_med.io import load_volume
        from resample_med.pipeline import load_measurements

        if job.kind == "sinogram":
            measurements = load_measurements(job.path, device=self.device)
            if self.options.slices is not None:
                measurements = measurements.select(common.parse_slice_range(self.options.slices))
                if measurements.n_slices == 0:
                    raise common.ConfigError(f"{job.path}: --slices {self.options.slices} selects no slice")
            return measurements
        source = load_volume(
            job.path,
            None if job.series is None else job.series.uid,
            skip_bad_slices=self.options.skip_bad_slices,
            fill_nonfinite=self.options.fill_nonfinite,
        )
        if self.options.slices is not None:
            source = common.crop_to_slices(source, self.options.slices, job.path)
        return source

    def _reconstruct(self, job: Job, out_dir: Path, current: dict[str, Any]) -> dict[str, Any]:
        """Load, reconstruct (resumably) and write one job's outputs; OUT is created only once the input has loaded.

        Returns the report (also written to ``report.json``)."""
        from resample_med.cli.outputs import FINGERPRINT_KEY, write_json
        from resample_med.io.output_paths import atomic_file
        from resample_med.pipeline import reconstruct_input
        from resample_med.pipeline.checkpoint import SliceCheckpoint

        started = time.perf_counter()
        recon = self.config.reconstruction
        loaded = self._load(job)
        self.session.prepare(out_dir, OWNED_OUTPUTS, self.overwrite)
        checkpoint = SliceCheckpoint.open(out_dir / PARTIAL_DIR, current, restart=self.overwrite)
        if checkpoint.done():
            self.console.info(
                f"{job.name or job.path}: resuming, {len(checkpoint.done())} slice(s) already "
                f"reconstructed in {checkpoint.folder}"
            )
        with ExitStack() as stack:
            bar = stack.enter_context(SliceBar(job.name or "slices", recon.batch_size, disable=self.console.quiet))
            bar.start(loaded.n_slices)
            result = reconstruct_input(
                loaded,
                self.config.acquisition,
                recon.method,
                self.prior,
                self.sampler,
                device=self.device,
                batch_size=recon.batch_size,
                n_samples=self.n_samples,
                seed=recon.seed,
                callback=bar.on_step,
                on_slices=bar.on_slices,
                checkpoint=checkpoint,
                volume_mode=common.volume_mode(recon),
            )
        std, per_slice, acquisition = result.std_hu, result.per_slice, result.measurements.acquisition
        if job.kind == "sinogram":
            volume = result.volume.with_hu(result.volume.hu, path=str(job.path))
            grid = (
                f"Reconstructed on the {volume.hu.shape[-1]}x{volume.hu.shape[-2]} grid of the sinogram file "
                f"({loaded.pixel_spacing_mm:.3g} mm pixels); no interpolation."
            )
        else:
            volume = result.volume
            grid = self._model_grid(loaded).describe()
        derivation = f"{grid} Simulated {_acquisition_text(acquisition)}."
        written = self._write_outputs(job, out_dir, volume, std, acquisition, derivation)
        with atomic_file(out_dir / CONFIG_FILE) as temporary:
            self.resolved_config().save(temporary)
        report = self._report(
            job,
            volume,
            acquisition,
            per_slice,
            time.perf_counter() - started,
            [out_dir / REPORT_FILE, *written, out_dir / CONFIG_FILE],
            derivation,
        )
        write_json(out_dir / REPORT_FILE, {**report, FINGERPRINT_KEY: current})  # last: marks the output finished
        checkpoint.clear()
        return report

    def _model_grid(self, source: CTVolume) -> Any:
        """The model grid the slices of ``source`` are reconstructed on (the prior's image size)."""
        from resample_med.geometry import DEFAULT_IMAGE_SIZE
        from resample_med.io.model_grid import ModelGrid, ModelGridConfig

        size = int(getattr(self.prior, "image_size", DEFAULT_IMAGE_SIZE))
        return ModelGrid.for_slices(source.hu.shape[1:], source.spacing_mm[1:], ModelGridConfig(size=size))

    def _write_outputs(
        self, job: Job, out_dir: Path, volume: CTVolume, std: np.ndarray | None, acquisition: Any, derivation: str
    ) -> list[Path]:
        """Derived DICOM series (and the std map's), and, as asked, NIfTI and PNG contact sheets."""
        from resample_med.io import write_contact_sheet, write_derived_series, write_nifti

        method = self.config.reconstruction.method
        geometry = _acquisition_text(acquisition, short=True)
        # out_dir is ours and holds no report.json yet: anything there is from an unfinished run
        written = [
            write_derived_series(
                volume,
                volume.hu,
                out_dir / DICOM_DIR,
                method=method,
                description=geometry,
                derivation=derivation,
                overwrite=True,
            )
        ]
        if std is not None:
            written.append(
                write_derived_series(
                    volume,
                    std,
                    out_dir / STD_DICOM_DIR,
                    method=f"{method} std",
                    description=geometry,
                    derivation=f"Posterior standard deviation in HU over {self.n_samples} samples. {derivation}",
                    series_number=_std_series_number(volume),
                    window=STD_WINDOW,
                    overwrite=True,
                )
            )
        if self.config.output.nifti or job.kind == "sinogram":
            written.append(write_nifti(volume, out_dir / NIFTI_FILE, overwrite=True))
            if std is not None:
                written.append(write_nifti(volume, out_dir / STD_NIFTI_FILE, hu=std, overwrite=True))
        if self.config.output.png:
            written.append(write_contact_sheet(volume, out_dir / PNG_FILE, self.window, overwrite=True))
            if std is not None:
                written.append(write_contact_sheet(std, out_dir / STD_PNG_FILE, STD_WINDOW, overwrite=True))
        return written

    def _report(
        self,
        job: Job,
        volume: CTVolume,
        acquisition: Any,
        per_slice: list[dict[str, Any]],
        seconds: float,
        written: list[Path],
        derivation: str,
    ) -> dict[str, Any]:
        """The ``report.json`` content."""
        computed = [r for r in per_slice if not r.get("resumed")]
        numeric = [k for k, v in (per_slice[0] if per_slice else {}).items() if isinstance(v, float)]
        return {
            "input": {
                "path": str(job.path),
                "kind": job.kind,
                "series": None if job.series is None else job.series.summary(),
                "shape_zyx": list(volume.shape),
                "spacing_mm_zyx": list(volume.spacing_mm),
                "files": [str(f) for f in volume.source.get("files", [])],
                "skipped_files": volume.source.get("skipped_files", []),
                "nonfinite_filled": volume.source.get("nonfinite_filled"),
            },
            "outputs": [str(p) for p in written],
            "derivation": derivation,
            "method": self.config.reconstruction.method,
            "preset": self.preset,
            "acquisition": acquisition.to_dict(),
            "config": self.resolved_config().to_dict(),
            "sampler_config": common.config_dict(self.sampler),
            "model": common.model_summary(self.prior, self.config.reconstruction.model, self.prior_weights),
            "device": str(self.device),
            "versions": common.versions(),
            "timings": {
                "seconds_total": seconds,
                "slices": len(per_slice),
                "slices_computed_this_run": len(computed),
                "seconds_per_slice": float(np.mean([r["seconds"] for r in computed])) if computed else None,
            },
            "mean": {k: float(np.mean([r[k] for r in per_slice if k in r])) for k in numeric},
            "per_slice": per_slice,
        }


class SliceBar:
    """The slice progress bar: its total is set before the first batch, and sampler steps within a
    batch advance it by fractions of the batch's slices."""

    BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total_fmt} slices [{elapsed}<{remaining}{postfix}]"

    def __init__(self, desc: str, batch_size: int, disable: bool = False) -> None:
        self.batch_size = max(1, int(batch_size))
        self.done = 0
        self.bar = tqdm(desc=desc, unit="slice", leave=False, disable=disable, bar_format=self.BAR_FORMAT)

    def __enter__(self) -> SliceBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def start(self, total: int) -> None:
        """The number of slices, known before any is reconstructed."""
        self.bar.total = total
        self.bar.refresh()

    def on_slices(self, done: int, total: int) -> None:
        """Slice-level progress (finished or restored slices)."""
        self.done = done
        self.bar.total = total
        self.bar.n = max(self.bar.n, done)  # a batch's steps may already have counted its slices
        self.bar.refresh()

    def on_step(self, event: ProgressEvent) -> None:
        """Sampler progress: the running batch counts by the fraction of its steps done."""
        total = self.bar.total or 0
        in_batch = min(self.batch_size, max(0, total - self.done))
        fraction = min(1.0, event.step / event.total) if event.total else 0.0
        self.bar.n = self.done + in_batch * fraction
        self.bar.set_postfix_str(f"{event.stage} {event.step}/{event.total}", refresh=True)


def _acquisition_text(acquisition: Any, short: bool = False) -> str:
    """``parallel 30 views 1e+05 ph`` (``short``, for SeriesDescription) or the spelled-out acquisition."""
    geometry = acquisition.geometry
    arc = f" over {acquisition.arc_deg:g} deg" if acquisition.arc_deg is not None else ""
    if acquisition.photons is not None:
        noise = f"{acquisition.photons:.0e} ph" if short else f"Poisson noise at {acquisition.photons:.0e} photons/ray"
    elif acquisition.gaussian_sigma is not None:
        noise = (
            f"sigma {acquisition.gaussian_sigma:g}" if short else f"Gaussian noise sigma {acquisition.gaussian_sigma:g}"
        )
    else:
        noise = "noiseless"
    if short:
        return f"{geometry} {acquisition.n_views} views{arc} {noise}"
    return f"{geometry}-beam scan, {acquisition.n_views} views{arc}, {noise}"


def _std_series_number(volume: CTVolume) -> int:
    """SeriesNumber of the std map's series: one past the reconstruction's default."""
    from resample_med.io.dicom_writer import DERIVED_SERIES_NUMBER_OFFSET

    return int(volume.source.get("SeriesNumber") or 0) + DERIVED_SERIES_NUMBER_OFFSET + 1


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """What the ``--json`` summary and summary.json keep of a series' report."""
    return {"timings": report["timings"], "mean": report["mean"], "outputs": report["outputs"]}


def metrics_line(name: str, report: dict[str, Any]) -> str:
    """The closing line of a series: slices, time, PSNR / SSIM / HU-RMSE (with a reference) and residual."""
    timings, mean = report["timings"], report["mean"]
    parts = [f"{timings['slices']} slice(s) in {timings['seconds_total']:.1f} s"]
    if timings.get("seconds_per_slice") is not None:
        parts.append(f"{timings['seconds_per_slice']:.1f} s/slice")
    if "psnr" in mean:
        parts.append(f"PSNR {mean['psnr']:.2f} dB, SSIM {mean['ssim']:.3f}, HU-RMSE {mean['rmse_hu']:.1f} HU")
    if "residual" in mean:
        parts.append(f"data residual {mean['residual']:.3g}")
    return f"{name}: " + ", ".join(parts)
