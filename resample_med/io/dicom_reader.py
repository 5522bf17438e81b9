"""Loading one DICOM CT series through MONAI: a MONAI ``ImageReader`` that orders slices by position.

MONAI's own ``PydicomReader`` orders slices by InstanceNumber (wrong when numbers are scrambled,
failing when they are missing) and its ``ITKReader`` needs the 1.5 GB ``itk`` package, so
:class:`PositionSortedDicomReader` implements MONAI's reader interface (``verify_suffix``,
``read`` -> image object, ``get_data`` -> (array, meta)) on top of :mod:`.discovery`,
:mod:`.slice_order` and :mod:`.pixel_decoding`. :func:`load_series` runs it through
``monai.transforms.LoadImage`` as the call-time reader::

    LoadImage(image_only=True)(folder, reader=PositionSortedDicomReader(series="B40f"))

(Given to the ``LoadImage`` constructor instead, MONAI would swallow our
:class:`DicomInputError` and silently retry with its InstanceNumber-sorting ``PydicomReader``.)

The array is (Z, Y, X) float32 HU with slices ascending along the normal; the meta ``affine``
maps (z, y, x) indices to LPS millimetres (``space`` = "LPS").
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader

from resample_med.io.dicom_headers import copied_header, read_dataset
from resample_med.io.discovery import SeriesInfo, describe_bad_files, discover_series, select_series
from resample_med.io.errors import DicomInputError, DicomInputWarning, MissingDecoderError
from resample_med.io.hu_checks import check_input_hu
from resample_med.io.pixel_decoding import decode_hu
from resample_med.io.slice_order import SortedSeries, sort_slices
from resample_med.io.volume import CTVolume
from resample_med.quiet import third_party_quiet

DICOM_SUFFIXES = ("", ".dcm", ".dicom", ".ima")
"""File suffixes :meth:`PositionSortedDicomReader.verify_suffix` accepts (folders always)."""


def open_series(
    path: str | os.PathLike[str], series: str | int | None = None, *, description: str | None = None
) -> tuple[SeriesInfo, SortedSeries]:
    """Discover, select (:func:`select_series`) and sort one series under ``path`` (headers only, no pixels decoded)."""
    info = select_series(discover_series(path), series, description=description)
    return info, sort_slices(info.folder, list(info.records))


def _slice_hu(sorted_series: SortedSeries, k: int) -> np.ndarray:
    """(Y, X) HU of slice ``k`` with the series' in-plane flips applied."""
    record = sorted_series.records[k]
    slope, intercept = sorted_series.rescale[k]
    hu = decode_hu(record.path, record.transfer_syntax, (record.rows, record.columns), float(slope), float(intercept))
    if sorted_series.flip_y:
        hu = hu[::-1]
    if sorted_series.flip_x:
        hu = hu[:, ::-1]
    return np.ascontiguousarray(hu)


def iter_series_slices(sorted_series: SortedSeries) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (k, (Y, X) float32 HU) slice by slice; memory stays one slice whatever Z is.

    Raises:
        DicomInputError: a slice cannot be decoded (slices are not skipped here, since the
            indices already yielded must stay valid).
    """
    for k in range(len(sorted_series.records)):
        yield k, _slice_hu(sorted_series, k)


def _subset(sorted_series: SortedSeries, keep: Sequence[int]) -> SortedSeries:
    idx = np.asarray(keep, dtype=int)
    return replace(
        sorted_series,
        records=tuple(sorted_series.records[i] for i in idx),
        positions=sorted_series.positions[idx],
        rescale=sorted_series.rescale[idx],
    )


def source_metadata(info: SeriesInfo, sorted_series: SortedSeries) -> dict[str, Any]:
    """The :attr:`CTVolume.source` dict of a DICOM series (UIDs, per-slice positions, header to copy)."""
    first = sorted_series.records[0]
    ds = read_dataset(first.path, pixels=False)
    header = copied_header(ds) if ds is not None else {}
    return {
        "format": "dicom",
        "path": str(info.folder),
        "files": [str(r.path) for r in sorted_series.records],
        "StudyInstanceUID": first.study_uid,
        "SeriesInstanceUID": first.series_uid,
        "FrameOfReferenceUID": first.frame_of_reference_uid,
        "SOPClassUID": first.sop_class_uid,
        "SOPInstanceUIDs": [r.sop_instance_uid for r in sorted_series.records],
        "ImagePositionPatient": sorted_series.positions.tolist(),
        "ImageOrientationPatient": list(sorted_series.orientation),
        "PatientID": header.get("PatientID", ""),
        "SeriesDescription": info.description,
        "SeriesNumber": info.number,
        "Modality": info.modality,
        "TransferSyntax": info.transfer_syntax,
        "SliceThickness": first.slice_thickness,
        "flipped_axes": [a for a, f in (("x", sorted_series.flip_x), ("y", sorted_series.flip_y)) if f],
        "header": header,
    }


class PositionSortedDicomReader(ImageReader):
    """MONAI ``ImageReader`` for one CT series, slices ordered by ImagePositionPatient.

    Args:
        series: which series of a folder to read, by UID or SeriesNumber (see :func:`select_series`);
            None for the largest axial CT series.
        description: choose the series by a part of its SeriesDescription instead.
        skip_bad_slices: read the series without its bad files (truncated, unreadable, no or short
            pixel data, a stray matrix), listed in ``source["skipped_files"]``; by default a bad
            file refuses the series, since the volume would have a hole.
    """

    def __init__(
        self, series: str | int | None = None, *, description: str | None = None, skip_bad_slices: bool = False
    ) -> None:
        super().__init__()
        self.series = series
        self.description = description
        self.skip_bad_slices = skip_bad_slices

    def verify_suffix(self, filename: Sequence[os.PathLike[str] | str] | os.PathLike[str] | str) -> bool:
        """True for folders and for files with a DICOM-like suffix (none, .dcm, .dicom, .ima)."""
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return all(Path(n).is_dir() or Path(n).suffix.lower() in DICOM_SUFFIXES for n in names)

    def read(
        self, data: Sequence[os.PathLike[str] | str] | os.PathLike[str] | str, **kwargs: Any
    ) -> tuple[SeriesInfo, SortedSeries]:
        """Discover, select and sort the series under ``data`` (one folder or file); headers only."""
        paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
        if len(paths) != 1:
            raise DicomInputError(str(paths[0]) if paths else ".", "give one DICOM folder or file, not a list")
        return open_series(paths[0], self.series, description=self.description)

    def get_data(self, img: tuple[SeriesInfo, SortedSeries]) -> tuple[np.ndarray, dict[str, Any]]:
        """Decode every slice: ((Z, Y, X) float32 HU, MONAI meta dict with LPS ``affine``).

        Bad files (unreadable in discovery, a stray matrix, undecodable pixels) refuse the series
        with one :class:`DicomInputError` naming each file and its problem, or, with
        ``skip_bad_slices``, are left out with one :class:`DicomInputWarning` and listed in
        ``source["skipped_files"]``. A missing decoder or a series with no decodable slice always raises.
        """
        info, sorted_series = img
        z, y, x = sorted_series.shape
        hu = np.empty((z, y, x), dtype=np.float32)
        good: list[int] = []
        bad: list[tuple[Path, str]] = [*info.bad_files, *sorted_series.dropped]
        for k in range(z):
            try:
                hu[len(good)] = _slice_hu(sorted_series, k)
            except MissingDecoderError:
                raise
            except DicomInputError as exc:
                bad.append((Path(exc.path), exc.problem))
                continue
            good.append(k)
        if not good:
            raise DicomInputError(info.folder, f"no slice of the series could be decoded: {describe_bad_files(bad)}")
        if bad and not self.skip_bad_slices:
            raise DicomInputError(
                info.folder,
                f"{len(bad)} bad file(s) would leave a hole in the series: {describe_bad_files(bad)}; "
                "fix or remove them, or reconstruct without them with --skip-bad-slices (skip_bad_slices=True)",
            )
        if bad:
            warnings.warn(
                f"{info.folder}: skipped {len(bad)} bad file(s): {describe_bad_files(bad)}",
                DicomInputWarning,
                stacklevel=2,
            )
            sorted_series = _subset(sorted_series, good)
            hu = hu[: len(good)]
        check_input_hu(hu, info.folder)
        source = source_metadata(info, sorted_series)
        if bad:
            source["skipped_files"] = [{"file": str(path), "reason": problem} for path, problem in bad]
        affine = np.eye(4)
        sz, sy, sx = sorted_series.spacing_mm
        affine[:3, 0] = sorted_series.direction[2] * sz
        affine[:3, 1] = sorted_series.direction[1] * sy
        affine[:3, 2] = sorted_series.direction[0] * sx
        affine[:3, 3] = sorted_series.positions[0]
        meta = {
            "affine": affine,
            "original_affine": affine.copy(),
            "spatial_shape": np.asarray(hu.shape),
            "original_channel_dim": float("nan"),
            "space": "LPS",
            "spacing_mm": sorted_series.spacing_mm,
            "direction": sorted_series.direction,
            "origin_mm": sorted_series.positions[0],
            "source": source,
        }
        return hu, meta


@functools.lru_cache(maxsize=1)
def _monai_loader() -> Any:
    """One ``LoadImage`` per process: constructing it instantiates all of MONAI's default readers."""
    from monai.transforms import LoadImage

    return LoadImage(image_only=True, dtype=np.float32)


def load_series(
    path: str | os.PathLike[str],
    series: str | int | None = None,
    *,
    description: str | None = None,
    skip_bad_slices: bool = False,
) -> CTVolume:
    """Load one DICOM CT series through ``monai.transforms.LoadImage`` into a :class:`CTVolume`.

    Args:
        path: a folder (scanned recursively) or one DICOM file.
        series: SeriesInstanceUID or SeriesNumber; None for the largest axial CT series.
        description: choose the series by a part of its SeriesDescription instead.
        skip_bad_slices: leave bad files out (listed in ``source["skipped_files"]``) instead of
            refusing the series (:class:`PositionSortedDicomReader`).

    Returns:
        CTVolume with (Z, Y, X) float32 HU, slices ascending along the slice normal.
    """
    reader = PositionSortedDicomReader(series, description=description, skip_bad_slices=skip_bad_slices)
    with third_party_quiet():
        image = _monai_loader()(str(path), reader=reader)
    meta = image.meta
    return CTVolume(
        hu=np.ascontiguousarray(image.numpy(), dtype=np.float32),
        spacing_mm=tuple(float(s) for s in meta["spacing_mm"]),  # type: ignore[arg-type]
        origin_mm=np.asarray(meta["origin_mm"], dtype=np.float64),
        direction=np.asarray(meta["direction"], dtype=np.float64),
        source=meta["source"],
    )
