"""``train pack``: carry-sized npz parts that the training loader reads like the npz files they came from."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from resample_med.cli import main
from resample_med.io.errors import OutputPathError
from resample_med.training.data import VALIDATION_SELECTION, SliceSelection, load_slices, load_validation_slices
from resample_med.training.pack import MANIFEST, pack_slices

SIZE = 32


def _source(path: Path, seed: int) -> Path:
    """10 noisy slices of 4 patients (p0..p3, the same ids in every source): 8 train (one of them
    non-commercial) and 2 val (one of them non-commercial)."""
    rng = np.random.default_rng(seed)
    np.savez(
        path,
        images_hu=rng.integers(-1024, 2000, (10, SIZE, SIZE)).astype(np.int16),
        split=np.array(["train"] * 8 + ["val"] * 2),
        license_class=np.array(["open"] * 7 + ["nc", "open", "nc"]),
        source=np.array([f"collection {seed}"] * 10),
        patient=np.array(["p0", "p0", "p0", "p1", "p1", "p2", "p2", "p2", "p3", "p3"]),
    )
    return path


@pytest.fixture()
def sources(tmp_path: Path) -> list[Path]:
    return [_source(tmp_path / "a.npz", 1), _source(tmp_path / "b.npz", 2)]


def _rows(hu: np.ndarray) -> list[bytes]:
    """The slices as a sorted list of their bytes: equal lists mean the same slices in any order."""
    return sorted(s.tobytes() for s in np.asarray(hu))


def test_the_parts_hold_the_selected_slices_with_every_patient_whole(sources: list[Path], tmp_path: Path) -> None:
    max_mib = 0.02  # a 32x32 slice of noise is about 1.5 KB compressed: several parts
    parts = pack_slices(sources, tmp_path / "pack", max_mib=max_mib)
    files = [p.path for p in parts]
    assert len(files) > 1 and all(p.bytes <= max_mib * 2**20 for p in parts)

    train, packed_train = load_slices(sources), load_slices(files)
    assert len(packed_train) == 14  # 7 open train slices per source; the non-commercial one stays out
    assert _rows(packed_train.hu.numpy()) == _rows(train.hu.numpy())
    val, packed_val = (
        load_validation_slices(sources, VALIDATION_SELECTION),
        load_validation_slices(files, VALIDATION_SELECTION),
    )
    assert packed_val is not None and val is not None
    assert _rows(packed_val.hu.numpy()) == _rows(val.hu.numpy())  # val keeps every licence class

    patients_per_part = [set(np.load(f)["patient"]) for f in files]
    assert sum(len(p) for p in patients_per_part) == len(set().union(*patients_per_part)) == 8
    # same patients with the same slice counts: patient balancing draws as from the sources
    assert packed_train.summary["patients"] == train.summary["patients"] == 6  # p3 is val only
    assert sorted(packed_train.sampling_weights(0.5).tolist()) == pytest.approx(
        sorted(train.sampling_weights(0.5).tolist())
    )

    manifest = json.loads((tmp_path / "pack" / MANIFEST).read_text())
    assert [s["file"] for s in manifest["sources"]] == ["a.npz", "b.npz"]
    assert manifest["slices"] == 18
    for part, record in zip(files, manifest["parts"], strict=True):
        assert record["path"] == part.name and record["sha256"] == hashlib.sha256(part.read_bytes()).hexdigest()


def test_hu_step_rounds_to_its_multiples_within_half_a_step(sources: list[Path], tmp_path: Path) -> None:
    parts = pack_slices(
        sources, tmp_path / "pack", hu_step=4, selections=(SliceSelection(splits=None, license_classes=None),)
    )
    exact = np.concatenate([np.load(s)["images_hu"] for s in sources]).astype(int)
    packed = np.concatenate([np.load(p.path)["images_hu"] for p in parts]).astype(int)
    assert np.all(packed % 4 == 0)
    # slices keep their order within a patient; compare slice by slice after sorting both by patient
    order = np.argsort(
        np.concatenate([np.char.add(f"{s.name}:", np.load(s)["patient"]) for s in sources]), kind="stable"
    )
    packed_patients = np.concatenate([np.load(p.path)["patient"] for p in parts])
    packed_order = np.argsort(packed_patients, kind="stable")
    assert np.abs(packed[packed_order] - exact[order]).max() <= 2


def test_pack_never_writes_over_earlier_parts(sources: list[Path], tmp_path: Path) -> None:
    first = pack_slices(sources, tmp_path / "pack")
    before = {p.path: p.path.read_bytes() for p in first}
    with pytest.raises(OutputPathError, match="already holds part-1-of-1.npz"):
        pack_slices(sources[:1], tmp_path / "pack")
    assert {p: p.read_bytes() for p in before} == before


def test_a_patient_larger_than_a_part_is_refused_with_the_option_to_change(sources: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"patient a.npz:p0: .* --max-mib 0.001 holds; raise --max-mib or --hu-step"):
        pack_slices(sources, tmp_path / "pack", max_mib=0.001)
    assert not (tmp_path / "pack").exists()


def test_train_pack_command(sources: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "pack", "--data", *map(str, sources), "--out", str(tmp_path / "pack"), "--hu-step", "4"]
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("18 slices in 1 part(s), ")  # 14 train, 4 val
    assert main(args) == 2
    assert "already holds part-1-of-1.npz" in capsys.readouterr().err


def test_a_part_over_the_limit_is_removed_with_the_parts_before_it(
    sources: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import resample_med.training.pack as pack

    monkeypatch.setattr(pack, "_estimated_bytes", lambda hu: 1.0)  # an estimate far too low
    with pytest.raises(RuntimeError, match="more than --max-mib 0.005 .* smaller --max-mib"):
        pack_slices(sources, tmp_path / "pack", max_mib=0.005)
    assert not list((tmp_path / "pack").iterdir())


def test_training_imports_without_the_packages_a_gpu_machine_lacks() -> None:
    """The device image has torch but not pydicom, SimpleITK, MONAI or napari (CONTRIBUTING.md):
    ``train pack|autoencoder|diffusion`` must import without them."""
    code = textwrap.dedent(
        """
        import importlib.abc, sys
        class Absent(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in {"pydicom", "SimpleITK", "monai", "napari", "magicgui"}:
                    raise ImportError(f"{name} is not on the GPU machine")
        sys.meta_path.insert(0, Absent())
        from resample_med.cli import build_parser
        import resample_med.training.autoencoder, resample_med.training.diffusion, resample_med.training.pack
        build_parser(with_train=True).parse_args(["train", "diffusion", "--data", "x.npz", "--out", "y"])
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
