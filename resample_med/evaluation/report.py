"""The evaluation's report: ``quality.md`` (tables, ReSample's margins, uncertainty calibration,
notes, figure), ``quality.json`` (everything, for :func:`merge`) and ``quality_figure.png``."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from resample_med.evaluation.data import SIMULATIONS, Setting
from resample_med.evaluation.runner import ABLATIONS, BASE_METHODS, POSTERIOR_ROW, MethodResult

STD_DISPLAY_MAX_HU = 200.0
"""Upper end of the uncertainty map's grey scale in the figure (HU)."""


def _mean_std(values: list[float], fmt: str) -> str:
    """``mean ± std`` (sample std; 0 for one value) formatted with ``fmt``."""
    a = np.asarray(values, dtype=float)
    return f"{a.mean():{fmt}} ± {a.std(ddof=1) if a.size > 1 else 0.0:{fmt}}"


def format_report(results: dict[Setting, list[MethodResult]], context: dict[str, Any]) -> str:
    """The markdown report: context, one table per setting, ReSample's margins, notes."""
    lines = ["# Reconstruction quality on the validation slices", ""]
    lines += [
        f"- **Date:** {context['date']}",
        f"- **Machine:** {context['machine']}",
        f"- **Command:** `{context['command']}`",
        f"- **Data:** {context['data']}",
        f"- **Measurements:** {context['measurements']}",
        f"- **Prior:** {context['prior']}",
        f"- **Sampler preset:** `{context['preset']}`"
        + (f" with `{' '.join(context['sampler_overrides'])}`" if context.get("sampler_overrides") else "")
        + (
            f", ReSample rows the mean of {context['resample_samples']} posterior samples"
            if context.get("resample_samples", 1) > 1
            else ""
        )
        + f" (`{json.dumps(context['preset_config'])}`)",
        f"- **TV weight:** {context['tv_weight']}",
        "",
    ]
    lines += [
        "PSNR and SSIM on the HU window [-1000, 1000] (mapped to [0, 1]) inside the reconstruction circle; "
        "HU-RMSE inside the circle; residual = ||A x - y|| / ||y|| of the linearised data; chi2/m = "
        "||A x - y||^2 / sum sigma_i^2 (1 = fits to the noise level). Mean ± standard deviation over slices; "
        "seconds per slice = the sampler's time in batches of `--batch-size` slices; "
        "peak memory = process peak RSS (CPU) or "
        "CUDA allocator peak (GPU) while the method ran.",
        "",
    ]
    for setting, rows in results.items():
        if not rows:
            continue
        lines += [
            f"## {setting.label}",
            "",
            "| method | slices | PSNR (dB) | SSIM | HU-RMSE | residual | chi2/m | s/slice | peak MiB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r.method} | {len(r.psnr)} | {_mean_std(r.psnr, '.2f')} | {_mean_std(r.ssim, '.3f')} | "
                f"{_mean_std(r.hu_rmse, '.0f')} | {np.mean(r.rel_residual):.4f} | "
                f"{np.mean(r.chi2_per_ray):.2f} | "
                f"{r.seconds_per_slice:.2f} | {r.peak_memory_mib:.0f} |"
            )
        lines.append("")
    lines += margins_section(results)
    lines += calibration_section(results)
    if context.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in context["notes"]] + [""]
    if context.get("figure"):
        lines += ["## Figure", "", f"![reconstructions]({context['figure']})", "", context["figure_caption"], ""]
    return "\n".join(lines)


def margins_section(results: dict[Setting, list[MethodResult]]) -> list[str]:
    """ReSample minus each baseline: mean PSNR and SSIM differences, paired over the slices both
    were scored on."""
    lines = [
        "## ReSample's margins (ReSample minus baseline; paired mean over the slices both ran on)",
        "",
        "| setting | vs | ΔPSNR (dB) | ΔSSIM | ReSample wins PSNR / SSIM on |",
        "|---|---|---|---|---|",
    ]
    for setting, rows in results.items():
        by = {r.method: r for r in rows}
        if "resample" not in by:
            continue
        ours = by["resample"]
        for base in ("fbp", "cgls", "tv", "latent_dps", *ABLATIONS):
            if base not in by:
                continue
            dp, ds = _paired_differences(ours, by[base])
            lines.append(
                f"| {setting.label} | {base} | {dp.mean():+.2f} | {ds.mean():+.3f} | "
                f"{int((dp > 0).sum())}/{dp.size} / {int((ds > 0).sum())}/{ds.size} slices |"
            )
    return lines + [""]


def calibration_section(results: dict[Setting, list[MethodResult]]) -> list[str]:
    """Per-slice uncertainty calibration of every row that is a posterior mean (absent without them)."""
    rows = [(setting, r) for setting, rs in results.items() for r in rs if "spearman" in r.extra]
    if not rows:
        return []
    lines = [
        "## Uncertainty calibration (ReSample's posterior std against the error of the posterior mean)",
        "",
        "Per slice, inside the reconstruction circle: Spearman rank correlation of the per-pixel std with "
        "|mean - truth| (1: the map ranks the errors perfectly, 0: unrelated) and the fraction of pixels with "
        "|mean - truth| <= 2 std (0.954 for calibrated Gaussian errors). Mean ± std over slices, and the range.",
        "",
        "| setting | method | slices | samples | Spearman | Spearman range | coverage of ±2 std | coverage range |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for setting, r in rows:
        rho, cov = np.asarray(r.extra["spearman"], float), np.asarray(r.extra["coverage"], float)
        lines.append(
            f"| {setting.label} | {r.method} | {len(rho)} | {r.extra['n_samples']} | {_mean_std(list(rho), '.2f')} | "
            f"{np.nanmin(rho):.2f} to {np.nanmax(rho):.2f} | {_mean_std(list(cov), '.3f')} | "
            f"{cov.min():.3f} to {cov.max():.3f} |"
        )
    return lines + [""]


def _paired_differences(ours: MethodResult, base: MethodResult) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice PSNR and SSIM differences ``ours - base`` on the slices both were scored on."""
    common = sorted(set(ours.slices) & set(base.slices))
    pos_ours = {s: k for k, s in enumerate(ours.slices)}
    pos_base = {s: k for k, s in enumerate(base.slices)}
    dp = np.asarray([ours.psnr[pos_ours[s]] - base.psnr[pos_base[s]] for s in common])
    ds = np.asarray([ours.ssim[pos_ours[s]] - base.ssim[pos_base[s]] for s in common])
    return dp, ds


def _to_gray(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (np.clip((img - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def make_figure(
    path: Path, columns: list[tuple[str, np.ndarray]], std_hu: np.ndarray | None, slice_ids: list[str]
) -> None:
    """A PNG grid: one row per slice; ground truth, methods (window [-1000, 1000] HU) and the
    ReSample std map (0 to :data:`STD_DISPLAY_MAX_HU` HU)."""
    from PIL import Image, ImageDraw

    tiles = list(columns) + ([("ReSample std (0-200 HU)", std_hu)] if std_hu is not None else [])
    n_rows, size, header = len(slice_ids), columns[0][1].shape[-1], 18
    canvas = Image.new("L", (size * len(tiles), header + n_rows * (size + header)), color=255)
    draw = ImageDraw.Draw(canvas)
    for c, (name, stack) in enumerate(tiles):
        draw.text((c * size + 4, 2), name, fill=0)
        for r in range(n_rows):
            is_std = std_hu is not None and c == len(tiles) - 1
            gray = _to_gray(stack[r], 0.0, STD_DISPLAY_MAX_HU) if is_std else _to_gray(stack[r], -1000.0, 1000.0)
            top = header + r * (size + header)
            canvas.paste(Image.fromarray(gray), (c * size, top + header))
            if c == 0:
                draw.text((4, top + 2), slice_ids[r], fill=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def write_outputs(results: dict[Setting, list[MethodResult]], context: dict[str, Any], out: Path) -> None:
    """``out/quality.md`` and ``out/quality.json`` of ``results`` (rows per setting) and ``context``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.md").write_text(format_report(results, context))
    raw = {
        "context": context,
        "settings": {s.label: asdict(s) for s in results},
        "results": {s.label: [asdict(r) for r in rows] for s, rows in results.items()},
    }
    (out / "quality.json").write_text(json.dumps(raw, indent=1))


def merge(runs: list[Path], out: Path, command: str, notes: list[str]) -> None:
    """One report in ``out`` from several runs' ``quality.json`` (e.g. one process per geometry, or
    the costly methods on fewer slices); the first run's context is kept, with the first figure
    found (copied into ``out``), the commands listed (``command`` last), the runs' notes (once each) and
    ``notes`` added. A method in several runs at one setting keeps the row scored on the most slices
    (the earlier run's on a tie), so a run on a few slices (a costly method, the figure) can come first.

    Raises:
        SystemExit: a folder of ``runs`` has no readable ``quality.json`` (the message names it).
    """
    raws = []
    for run in runs:
        try:
            raws.append(json.loads((run / "quality.json").read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(
                f"--merge {run}: no readable quality.json there ({err}); pass the --out folders of evaluation runs"
            ) from err
    context = raws[0]["context"]
    with_figure = [(d, r["context"]) for d, r in zip(runs, raws) if r["context"].get("figure")]
    if with_figure:
        source_dir, source_context = with_figure[0]
        context["figure"], context["figure_caption"] = source_context["figure"], source_context["figure_caption"]
        out.mkdir(parents=True, exist_ok=True)
        figure = source_dir / source_context["figure"]
        if figure.resolve() != (out / figure.name).resolve():
            shutil.copyfile(figure, out / figure.name)
    context["command"] = " ; ".join(r["context"]["command"] for r in raws) + f" ; {command}"
    context["notes"] = list(dict.fromkeys([n for r in raws for n in r["context"].get("notes", [])] + list(notes)))
    results: dict[Setting, list[MethodResult]] = {}
    context["simulations"] = sorted(
        {s for r in raws for s in r["context"].get("simulations", ["matched"])}, key=SIMULATIONS.index
    )
    # the first run's measurement line names its own simulations: name the merged runs' instead
    context["measurements"] = re.sub(
        r"simulation: \w+( and \w+)*",
        "simulation: " + " and ".join(context["simulations"]),
        context["measurements"],
        count=1,
    )
    for raw in raws:
        settings = raw.get("settings", {})
        for label, rows in raw["results"].items():
            setting = Setting(**settings[label]) if label in settings else Setting.from_label(label)
            have = results.setdefault(setting, [])
            for row in (MethodResult(**r) for r in rows):
                same = [k for k, h in enumerate(have) if h.method == row.method]
                if not same:
                    have.append(row)
                elif len(row.slices) > len(have[same[0]].slices):
                    have[same[0]] = row
    order = list(BASE_METHODS) + [POSTERIOR_ROW] + list(ABLATIONS)
    results = {
        s: sorted(rows, key=lambda r: order.index(r.method))
        for s, rows in sorted(
            results.items(),
            key=lambda kv: (SIMULATIONS.index(kv[0].simulation), kv[0].n_views, kv[0].geometry != "parallel"),
        )
    }
    write_outputs(results, context, out)
    print(f"wrote {out / 'quality.md'}")
