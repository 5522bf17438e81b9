"""Writing a reconstruction as a derived DICOM CT series that viewers and PACS accept.

The series is a new CT series in the source's study and frame of reference: new
SeriesInstanceUID and SOPInstanceUIDs (``pydicom.uid.generate_uid``), ImageType
DERIVED\\SECONDARY\\AXIAL, a SeriesDescription naming the method once and the caller's
description (the acquisition), DerivationDescription and ImageComments saying how the images were
made (for instance on the model grid and interpolated back to the source grid), per-slice
ImagePositionPatient / ImageOrientationPatient / PixelSpacing / SliceThickness of the source
geometry, int16 pixels with RescaleSlope/Intercept chosen to hold the HU range, the patient and
study modules copied, and a ReferencedSeriesSequence plus per-slice SourceImageSequence pointing
at the source images. The folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

import resample_med
from resample_med.io.errors import DicomInputWarning
from resample_med.io.hu_checks import require_finite
from resample_med.io.output_paths import atomic_directory, check_output_path, input_paths
from resample_med.io.preview import HUWindow, resolve_window
from resample_med.io.volume import CTVolume

INT16_MIN, INT16_MAX = -32768, 32767
"""Range of the stored pixel values."""

DERIVED_SERIES_NUMBER_OFFSET = 1000
"""Default SeriesNumber of a derived series: the source's plus this."""

DEFAULT_DISPLAY_WINDOW = "soft_tissue"
"""WindowCenter/WindowWidth written into the derived series."""

MAX_DESCRIPTION = 64
"""Length limit of a LO value such as SeriesDescription."""

TYPE2_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "Manufacturer",
    "PositionReferenceIndicator",
    "KVP",
    "AcquisitionNumber",
)
"""Type 2 attributes of the CT Image IOD written empty when the source has no value."""

UNPAIRED_BODY_PARTS = frozenset(
    {
        "HEAD",
        "BRAIN",
        "SKULL",
        "NECK",
        "HEADNECK",
        "CHEST",
        "THORAX",
        "HEART",
        "ABDOMEN",
        "PELVIS",
        "CHESTABDOMEN",
        "ABDOMENPELVIS",
        "CHESTABDPELVIS",
        "WHOLEBODY",
        "SPINE",
        "CSPINE",
        "TSPINE",
        "LSPINE",
        "SSPINE",
        "COCCYX",
        "LIVER",
        "PANCREAS",
        "SPLEEN",
        "STOMACH",
        "BLADDER",
        "PROSTATE",
        "UTERUS",
        "AORTA",
        "MEDIASTINUM",
    }
)
"""BodyPartExamined defined terms of unpaired structures: the derived series omits Laterality (Type 2C, required
only for paired structures); for any other or missing body part it copies the source's or writes it empty."""


def rescale_for_int16(hu: np.ndarray) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) so that ``round((hu - b) / m)`` fits int16.

    Slope 1 and intercept 0 (0.5 HU quantisation) whenever the HU range fits int16, as for any
    real CT; otherwise the range is spread over the full int16 span.
    """
    lo, hi = float(np.min(hu)), float(np.max(hu))
    if lo >= INT16_MIN and hi <= INT16_MAX:
        return 1.0, 0.0
    slope = (hi - lo) / (INT16_MAX - INT16_MIN)
    return slope, lo - INT16_MIN * slope


def _uid_or_new(source: dict, key: str, what: str, out: Path) -> str:
    uid = str(source.get(key) or "")
    if uid:
        return uid
    warnings.warn(
        f"{out}: the source has no {key}; the derived series gets a new {what}", DicomInputWarning, stacklevel=3
    )
    return generate_uid()


def _referenced_series(source: dict) -> Sequence | None:
    series_uid = source.get("SeriesInstanceUID")
    if not series_uid:
        return None
    item = pydicom.Dataset()
    item.SeriesInstanceUID = series_uid
    instances = Sequence()
    for sop_uid in source.get("SOPInstanceUIDs", []):
        if sop_uid:
            ref = pydicom.Dataset()
            ref.ReferencedSOPClassUID = source.get("SOPClassUID") or CTImageStorage
            ref.ReferencedSOPInstanceUID = sop_uid
            instances.append(ref)
    item.ReferencedInstanceSequence = instances
    return Sequence([item])


def _series_template(
    volume: CTVolume,
    method: str,
    description: str,
    series_number: int | None,
    study_uid: str,
    frame_uid: str,
    referenced: Sequence | None,
    derivation: str,
    window: str | HUWindow | tuple[float, float],
) -> pydicom.Dataset:
    """The attributes every slice of the derived series shares (all but position, UIDs and pixels)."""
    source = volume.source
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    for keyword, value in source.get("header", {}).items():
        setattr(ds, keyword, value)
    for keyword in TYPE2_KEYWORDS:
        if keyword not in ds:
            setattr(ds, keyword, "")
    if "Laterality" not in ds and str(ds.get("BodyPartExamined", "")).strip().upper() not in UNPAIRED_BODY_PARTS:
        ds.Laterality = ""  # Type 2C: a possibly paired structure of unknown side
    ds.StudyInstanceUID = study_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SeriesInstanceUID = generate_uid()
    default_number = int(source.get("SeriesNumber") or 0) + DERIVED_SERIES_NUMBER_OFFSET
    ds.SeriesNumber = default_number if series_number is None else series_number
    ds.SeriesDescription = f"{method} {description}".strip()[:MAX_DESCRIPTION]
    ds.DerivationDescription = " ".join(
        filter(
            None,
            [
                f"resample-med {resample_med.__version__}: {method} reconstruction ({description}) "
                f"of series {source.get('SeriesInstanceUID') or source.get('path', '')}.",
                derivation,
            ],
        )
    )
    if derivation:
        ds.ImageComments = derivation
    ds.SoftwareVersions = f"resample-med {resample_med.__version__}"
    now = dt.datetime.now()
    ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = now.strftime("%H%M%S")
    if referenced is not None:
        ds.ReferencedSeriesSequence = referenced
    sz, sy, sx = volume.spacing_mm
    ds.ImageOrientationPatient = [float(v) for v in np.concatenate([volume.direction[0], volume.direction[1]])]
    ds.PixelSpacing = [float(sy), float(sx)]
    ds.SliceThickness = float(source.get("SliceThickness") or sz)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = volume.hu.shape[1], volume.hu.shape[2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleType = "HU"
    window = resolve_window(window)
    ds.WindowCenter, ds.WindowWidth = window.center, window.width
    return ds


def write_derived_series(
    volume: CTVolume,
    hu: np.ndarray,
    out_dir: str | os.PathLike[str],
    method: str,
    description: str,
    *,
    series_number: int | None = None,
    derivation: str = "",
    window: str | HUWindow | tuple[float, float] = DEFAULT_DISPLAY_WINDOW,
    overwrite: bool = False,
) -> Path:
    """Write ``hu`` (Z, Y, X) on ``volume``'s grid as a derived DICOM CT series in ``out_dir``.

    Args:
        volume: the source volume (geometry, UIDs, patient/study attributes).
        hu: (Z, Y, X) HU, same shape as ``volume.hu`` (map model-grid results back with
            :meth:`ModelSlice.to_source` first).
        out_dir: folder to create (one file per slice, ``IM00001.dcm`` ...); never inside an
            input folder.
        method: reconstruction method, e.g. "resample".
        description: what else to say, e.g. "30 views, 1e5 photons".
        series_number: SeriesNumber; default source SeriesNumber + 1000.
        derivation: how the images were made beyond method and description (e.g. "reconstructed
            on the 256x256 model grid, interpolated back to the 512x512 source grid"); appended to
            DerivationDescription and written as ImageComments.
        window: WindowCenter/WindowWidth written (a name in :data:`HU_WINDOWS`, a window, or
            (center, width)).
        overwrite: replace an existing ``out_dir``.

    Returns:
        The written folder.

    Raises:
        OutputPathError: unsafe or existing ``out_dir``.
        NonFiniteError: ``hu`` holds NaN or Inf (nothing is written).
        ValueError: wrong shape.
    """
    target = check_output_path(Path(out_dir), input_paths(volume), overwrite=overwrite)
    hu = np.asarray(hu, dtype=np.float32)
    if hu.shape != volume.hu.shape:
        raise ValueError(f"HU array {hu.shape} does not match the source volume {volume.hu.shape}")
    require_finite(hu, target)
    source = volume.source
    study_uid = _uid_or_new(source, "StudyInstanceUID", "StudyInstanceUID (a new study)", target)
    frame_uid = _uid_or_new(source, "FrameOfReferenceUID", "FrameOfReferenceUID", target)
    referenced = _referenced_series(source)
    if referenced is None:
        warnings.warn(
            f"{target}: the source has no SeriesInstanceUID; no ReferencedSeriesSequence written",
            DicomInputWarning,
            stacklevel=2,
        )
    slope_text, intercept_text = (f"{v:.10g}" for v in rescale_for_int16(hu))  # DS holds at most 16 characters
    slope, intercept = float(slope_text), float(intercept_text)
    if slope != 1.0:
        warnings.warn(
            f"{target}: HU from {float(hu.min()):.6g} to {float(hu.max()):.6g} exceed int16 pixels; stored with "
            f"RescaleSlope {slope_text}, i.e. in steps of {slope:.3g} HU",
            DicomInputWarning,
            stacklevel=2,
        )
    template = _series_template(
        volume, method, description, series_number, study_uid, frame_uid, referenced, derivation, window
    )
    template.RescaleSlope, template.RescaleIntercept = slope_text, intercept_text
    positions = volume.slice_positions()
    sop_uids = list(source.get("SOPInstanceUIDs", []))
    with atomic_directory(target) as folder:
        for k in range(volume.n_slices):
            ds = copy.deepcopy(template)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [float(v) for v in positions[k]]
            ds.SliceLocation = float(positions[k] @ np.asarray(volume.direction[2]))
            if referenced is not None and k < len(sop_uids) and sop_uids[k]:
                item = pydicom.Dataset()
                item.ReferencedSOPClassUID = source.get("SOPClassUID") or CTImageStorage
                item.ReferencedSOPInstanceUID = sop_uids[k]
                ds.SourceImageSequence = Sequence([item])
            stored = np.clip(np.round((hu[k] - intercept) / slope), INT16_MIN, INT16_MAX).astype("<i2")
            ds.PixelData = stored.tobytes()
            ds.save_as(folder / f"IM{k + 1:05d}.dcm", enforce_file_format=True)
    return target
