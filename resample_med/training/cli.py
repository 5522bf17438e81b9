"""``resample-med train autoencoder|diffusion|pack``: argparse front end of the two training stages
and of ``pack``, which copies training slices into parts small enough to carry to a device machine.

``add_train_parser(subparsers)`` registers the ``train`` command on the main CLI's subparsers; each
stage sets ``func`` to a callable taking the parsed namespace. Options left unset keep the chosen
preset's value, so ``--preset cpu --max-minutes 40`` changes only the time budget.

Examples::

    resample-med train autoencoder --data data/ct_hu256.npz --preset cpu --out runs/ae \
        --max-minutes 40
    resample-med train diffusion --data data/ct_hu256.npz --autoencoder runs/ae \
        --preset cpu --out runs/ldm --max-minutes 40
    resample-med train diffusion --data data/ct_hu256.npz \
        --init-from resample_med/default_model --preset gpu --out runs/ldm_gpu --max-minutes 8
    resample-med train autoencoder --data data/ct_hu256.npz data/ct_extra_hu256.npz \
        --init-from resample_med/default_model --preset cpu_continue --out runs/ae2 --max-minutes 60
    resample-med train pack --data data/ct_hu256.npz data/ct_extra_hu256.npz --out .pack --hu-step 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from typing import Any

# CLI option name -> config field name, for options both stages share.
_COMMON_OVERRIDES = {
    "data": "data",
    "out": "out_dir",
    "max_steps": "max_steps",
    "max_minutes": "max_minutes",
    "resume": "resume",
    "init_from": "init_from",
    "device": "device",
    "batch_size": "batch_size",
    "lr": "lr",
    "seed": "seed",
    "num_threads": "num_threads",
    "architecture": "architecture",
    "patient_balance": "patient_balance",
    "cpu_bf16": "cpu_bf16",
    "ema_decay": "ema_decay",
    "val_every": "val_every",
    "keep_best": "keep_best",
}


def _add_common(p: argparse.ArgumentParser, presets: list[str]) -> None:
    """Options every stage takes."""
    from resample_med.models.config import ARCHITECTURES

    p.add_argument(
        "--data",
        nargs="+",
        required=True,
        help="one npz (keys images_hu, split, license_class) or DICOM folders / NIfTI files",
    )
    p.add_argument("--preset", choices=presets, default="cpu", help="named training configuration")
    p.add_argument("--out", required=True, help="run folder (checkpoint, loss log, weights)")
    p.add_argument("--architecture", choices=sorted(ARCHITECTURES), help="network size preset")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (total)")
    p.add_argument("--max-minutes", type=float, help="stop cleanly (and save) after this wall time")
    p.add_argument("--resume", action="store_true", default=None, help="continue from OUT/checkpoint.pt")
    p.add_argument("--init-from", help="start from the weights of a model folder (e.g. resample_med/default_model)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="peak learning rate (after warm-up)")
    p.add_argument("--seed", type=int)
    p.add_argument("--num-threads", type=int, help="torch CPU threads")
    p.add_argument("--ema-decay", type=float, help="decay of the weight average that is validated and shipped")
    p.add_argument("--val-every", type=int, help="validate (and select the shipped weights) every this many steps")
    p.add_argument(
        "--keep-best",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ship the run's best validated weights (--no-keep-best: the last ones; with --resume and "
        "--max-steps at the last checkpoint, this writes the last weights of a finished run)",
    )
    p.add_argument(
        "--patient-balance",
        type=float,
        help="slice i of a patient with n slices is drawn with weight n^-B (0: uniform over slices, 1: over patients)",
    )
    p.add_argument(
        "--cpu-bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast for training steps on the CPU (about 2x faster on CPUs with AVX512-BF16 or AMX, about 2x slower on CPUs without; default of the cpu_continue presets: on where the CPU has them)",
    )
    p.add_argument(
        "--all-licences", action="store_true", help="train on every licence class of the npz, not only 'open'"
    )


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train`` with the sub-stages ``autoencoder``, ``diffusion`` and ``pack``."""
    from resample_med.training.autoencoder import AUTOENCODER_PRESETS
    from resample_med.training.diffusion import DIFFUSION_PRESETS, HELD_OUT_MIN_SNR_GAMMA, SELECTION_SCORES
    from resample_med.training.pack import DEFAULT_MAX_MIB

    train = subparsers.add_parser("train", help="train the latent diffusion prior on CT slices")
    stages = train.add_subparsers(dest="stage", required=True)

    ae = stages.add_parser("autoencoder", help="stage 1: the image <-> latent autoencoder")
    _add_common(ae, sorted(AUTOENCODER_PRESETS))
    ae.add_argument("--crop-size", type=int, help="random crop side in pixels (the autoencoder is convolutional)")
    ae.add_argument(
        "--trainable",
        choices=["all", "decoder"],
        help="'decoder' fine-tunes the decoder only, keeping the latent space a trained UNet lives in",
    )
    ae.set_defaults(func=lambda args: run_training("autoencoder", args))

    dm = stages.add_parser("diffusion", help="stage 2: the latent UNet on precomputed latents")
    _add_common(dm, sorted(DIFFUSION_PRESETS))
    dm.add_argument("--autoencoder", help="folder holding autoencoder/ (a stage-1 run or a model folder)")
    dm.add_argument(
        "--select-on",
        choices=list(SELECTION_SCORES),
        help="which EMA weights ship: lowest held-out loss, or lowest W1 of HU of a few samples vs val",
    )
    dm.add_argument("--select-samples", type=int, help="samples drawn at each check with --select-on sample_w1")
    dm.add_argument("--select-sample-steps", type=int, help="DDIM steps of those samples")
    dm.add_argument(
        "--select-max-loss-rise",
        type=float,
        help="with sample_w1: weights whose held-out loss is more than this fraction above the run's lowest are not eligible",
    )
    dm.add_argument(
        "--dropout",
        type=float,
        help="dropout probability in the UNet's training steps, against memorising few slices (the shipped prior's round 5: 0.2); the shipped weights run without it",
    )
    dm.add_argument(
        "--zoom-levels",
        type=float,
        nargs="+",
        help="zoom-out factors whose latents are precomputed and drawn (1 = as stored; the cpu_continue preset: 1 0.8)",
    )
    dm.add_argument(
        "--rotation-levels",
        dest="rotation_levels_deg",
        metavar="DEG",
        type=float,
        nargs="+",
        help="in-plane rotations in degrees, combined with every zoom level (0 = as stored), against memorising few slices (the shipped prior's rounds 7 to 9: 0 7 -7 10 -10, inside the +-10 degrees its autoencoder was trained on, then 0 alone for 750 steps)",
    )
    dm.add_argument(
        "--min-snr-gamma",
        type=float,
        help=f"gamma of the loss weighting min(SNR, gamma) / (SNR + 1) (Hang et al. 2023; presets: {HELD_OUT_MIN_SNR_GAMMA:g}); larger weighs the low-noise steps, which draw fine structure, more. The held-out loss keeps gamma {HELD_OUT_MIN_SNR_GAMMA:g}",
    )
    dm.add_argument(
        "--deepen",
        action="store_true",
        default=None,
        help="with --init-from: add one layer to every UNet block, initialised so that the grown UNet computes what the old one did, then train (more capacity without starting from noise; the shipped UNet's evaluations cost about 1.5x, ReSample fast about 1.06x: benchmarks/results/prior_recipe_speed_deepened.md)",
    )
    dm.set_defaults(func=lambda args: run_training("diffusion", args))

    pack = stages.add_parser(
        "pack",
        help="copy the training and val slices of npz files into npz parts small enough to carry to a GPU machine",
    )
    pack.add_argument(
        "--data", nargs="+", required=True, help="npz files (keys images_hu, patient, split, license_class)"
    )
    pack.add_argument("--out", required=True, help="a new or empty folder for part-K-of-N.npz and PACK.json")
    pack.add_argument(
        "--max-mib",
        type=float,
        default=DEFAULT_MAX_MIB,
        help=f"the largest part in MiB (default {DEFAULT_MAX_MIB:g}: one part, the tree and diffusers' wheels fit a device call)",
    )
    pack.add_argument(
        "--hu-step",
        type=int,
        default=1,
        help="round HU to multiples of this (1: exact; 4: parts about a third smaller, error at most 2 HU)",
    )
    pack.add_argument(
        "--all-licences", action="store_true", help="pack the train slices of every licence class, not only 'open'"
    )
    pack.set_defaults(func=run_pack)


def _overrides(args: dict[str, Any]) -> dict[str, Any]:
    """Config field -> value for every option the user set."""
    out = {field: args[opt] for opt, field in _COMMON_OVERRIDES.items() if args.get(opt) is not None}
    if "data" in out:
        out["data"] = tuple(str(p) for p in out["data"])
    return out


def run_training(stage: str, args: argparse.Namespace | dict[str, Any]) -> dict[str, Any]:
    """Build the stage's config from its preset plus the given options, train, print the summary."""
    opts = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    with warnings.catch_warnings():
        _print_selection_warnings_on_one_line()
        summary = _train_stage(stage, opts)
    print(json.dumps(summary, indent=2, default=str))
    return summary


def _train_stage(stage: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Train ``stage`` with its preset and the options in ``opts``; returns the run's summary."""
    from resample_med.training.data import SliceSelection

    changes = _overrides(opts)
    if opts.get("all_licences"):
        changes["selection"] = SliceSelection(license_classes=None)
    if stage == "autoencoder":
        from resample_med.training.autoencoder import AUTOENCODER_PRESETS, train_autoencoder

        cfg = AUTOENCODER_PRESETS[opts.get("preset") or "cpu"]
        if opts.get("trainable") is not None:
            changes["trainable"] = opts["trainable"]
        if opts.get("crop_size") is not None:
            changes["augment"] = dataclasses.replace(cfg.augment, crop_size=opts["crop_size"])
        return train_autoencoder(dataclasses.replace(cfg, **changes))
    elif stage == "diffusion":
        from resample_med.training.diffusion import DIFFUSION_PRESETS, train_diffusion

        diffusion_cfg = DIFFUSION_PRESETS[opts.get("preset") or "cpu"]
        if opts.get("autoencoder") is not None:
            changes["autoencoder"] = str(opts["autoencoder"])
        for name in (
            "select_on",
            "select_samples",
            "select_sample_steps",
            "select_max_loss_rise",
            "dropout",
            "zoom_levels",
            "rotation_levels_deg",
            "min_snr_gamma",
            "deepen",
        ):
            if opts.get(name) is not None:
                value = opts[name]
                changes[name] = tuple(value) if isinstance(value, list) else value
        return train_diffusion(dataclasses.replace(diffusion_cfg, **changes))
    raise ValueError(f"unknown training stage {stage!r} (autoencoder|diffusion)")


def run_pack(args: argparse.Namespace) -> None:
    """``train pack``: write the parts, print one line per part and the folder's total."""
    from resample_med.training.data import VALIDATION_SELECTION, SliceSelection
    from resample_med.training.pack import pack_slices

    train = SliceSelection(license_classes=None) if args.all_licences else SliceSelection()
    parts = pack_slices(args.data, args.out, args.max_mib, args.hu_step, (train, VALIDATION_SELECTION))
    for part in parts:
        print(f"{part.path}: {part.slices} slices, {part.patients} patients, {part.bytes / 2**20:.1f} MiB")
    print(
        f"{sum(p.slices for p in parts)} slices in {len(parts)} part(s), {sum(p.bytes for p in parts) / 2**20:.1f} MiB"
    )


def _print_selection_warnings_on_one_line() -> None:
    """Inside a ``warnings.catch_warnings()`` block: print each :class:`SelectionWarning` as one line
    for the person at the terminal (no source file and line); other warnings as before."""
    from resample_med.training.checkpoint import SelectionWarning

    shown_as_before = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *rest: Any, **kwargs: Any) -> None:
        if issubclass(category, SelectionWarning):
            print(f"resample-med train: warning: {message}", file=sys.stderr)
        else:
            shown_as_before(message, category, *rest, **kwargs)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> None:
    """Stand-alone entry: ``python -m resample_med.training.cli train autoencoder ...``."""
    parser = argparse.ArgumentParser(prog="resample-med-train")
    add_train_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
