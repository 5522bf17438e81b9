"""The real CT slices shipped for the demo, the napari sample menu and the tests (no network, no ../shared).

* ``chest`` (the default): a chest slice of TCIA NSCLC Radiogenomics (CC BY 3.0), the anatomy the
  shipped prior was trained for, from a patient held out of its training data;
* ``head``: a head slice from pydicom's test files, OUTSIDE the prior's training distribution
  (chest and abdomen only): the out-of-distribution example;
* ``small``: a 128x128 crop at the spine (pydicom's CT_small), for fast tests.

See ``sample_data/README.md`` for provenance and licences. Each is stored in ``sample_data/`` as a
copy with private tags dropped and patient name and ID replaced, pixel data and geometry
byte-for-byte unchanged. When the package is installed without the repository's ``sample_data/``
folder, the pydicom samples are read from the copies inside the installed pydicom wheel; the chest
sample ships only with the source checkout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from resample_med.io.errors import DicomInputError
from resample_med.io.volume import CTVolume

SAMPLE_DATA_DIR = Path(__file__).resolve().parents[2] / "sample_data"
"""The repository's top-level sample_data/ folder (present in a source checkout / editable install)."""

ANONYMOUS_NAME = "RESAMPLE_MED^SAMPLE"
"""PatientName and PatientID written into the committed sample files."""


@dataclass(frozen=True)
class SampleCT:
    """One shipped sample.

    Attributes:
        filename: file in sample_data/.
        description: what it is (anatomy, size, pixel spacing, encoding).
        in_distribution: whether the shipped prior was trained for this anatomy (chest, abdomen).
        pydicom_file: the original in pydicom's bundled test files, or ``None``.
        shared_file: the original under ``../shared`` (relative to it), or ``None``.
    """

    filename: str
    description: str
    in_distribution: bool
    pydicom_file: str | None = None
    shared_file: str | None = None

    @property
    def distribution_note(self) -> str:
        """Whether the prior knows this anatomy, in words for the demo and the napari menu."""
        if self.in_distribution:
            return "inside the prior's training distribution (chest and abdomen)"
        return "OUTSIDE the prior's training distribution (it was trained on chest and abdomen only)"


SAMPLE_CTS: dict[str, SampleCT] = {
    "chest": SampleCT(
        "ct_chest_nsclc_radiogenomics.dcm",
        "chest CT (TCIA NSCLC Radiogenomics R01-001, CC BY 3.0), 1 slice, 512x512 at 0.693 mm, 1 mm thick, "
        "uncompressed",
        in_distribution=True,
        shared_file="dicom/nsclc_radiogenomics_val3d/1-152.dcm",
    ),
    "head": SampleCT(
        "ct_head_tilted.dcm",
        "head CT, 1 slice, 512x512 at 0.431 mm, 5 mm thick, 22 deg gantry tilt, JPEG 2000 lossless",
        in_distribution=False,
        pydicom_file="J2K_pixelrep_mismatch.dcm",
    ),
    "small": SampleCT(
        "ct_small.dcm",
        "CT crop at the spine, 1 slice, 128x128 at 0.661 mm, uncompressed (NEMA WG04 CT1, downsized)",
        in_distribution=False,
        pydicom_file="CT_small.dcm",
    ),
}
"""Named samples; :data:`DEFAULT_SAMPLE` opens the demo and the napari sample menu."""

DEFAULT_SAMPLE = "chest"
"""The demo's sample: an anatomy the prior was trained for. ``head`` is the out-of-distribution example."""

SHARED_DIR = SAMPLE_DATA_DIR.parent.parent / "shared"
"""Where the originals of ``shared_file`` samples live (only on the project's machines)."""


def pydicom_test_file(name: str) -> Path:
    """Path of a CT file bundled inside the installed pydicom wheel (never downloaded)."""
    import pydicom.data

    path = Path(pydicom.data.__file__).resolve().parent / "test_files" / name
    if not path.is_file():
        raise DicomInputError(path, "pydicom's bundled test file is missing; reinstall pydicom or restore sample_data/")
    return path


def sample_ct_path(name: str = DEFAULT_SAMPLE) -> Path:
    """The DICOM file of sample ``name``: sample_data/ if present, else pydicom's bundled original."""
    if name not in SAMPLE_CTS:
        raise KeyError(f"unknown sample CT '{name}'; choose from {sorted(SAMPLE_CTS)}")
    sample = SAMPLE_CTS[name]
    shipped = SAMPLE_DATA_DIR / sample.filename
    if shipped.is_file():
        return shipped
    if sample.pydicom_file is None:
        raise DicomInputError(
            shipped,
            f"the {name} sample ships with the source checkout (sample_data/) only; "
            f"use a source install or the 'head' sample",
        )
    return pydicom_test_file(sample.pydicom_file)


def original_file(name: str) -> Path:
    """The original file sample ``name`` was derived from (pydicom's test data or ../shared)."""
    sample = SAMPLE_CTS[name]
    if sample.pydicom_file is not None:
        return pydicom_test_file(sample.pydicom_file)
    path = SHARED_DIR / str(sample.shared_file)
    if not path.is_file():
        raise DicomInputError(path, "the original of this sample is only on machines with ../shared")
    return path


def derive_sample_file(name: str, out: str | os.PathLike[str]) -> Path:
    """Write the anonymised copy of sample ``name`` from its original to ``out``.

    This is how the files in sample_data/ were made; pixel data and geometry are untouched.
    """
    import pydicom

    ds = pydicom.dcmread(original_file(name))
    ds.remove_private_tags()
    ds.PatientName = ANONYMOUS_NAME
    ds.PatientID = ANONYMOUS_NAME
    ds.SeriesDescription = f"resample-med sample: {SAMPLE_CTS[name].description}"[:64]
    out = Path(out)
    ds.save_as(out, enforce_file_format=True)
    return out


def load_sample_ct(name: str = DEFAULT_SAMPLE) -> CTVolume:
    """The real sample CT ``name`` (see :data:`SAMPLE_CTS`) as a one-slice :class:`CTVolume`."""
    from resample_med.io.load import load_volume

    return load_volume(sample_ct_path(name))
