"""Decoding the pixels of one DICOM slice into Hounsfield units.

pydicom decodes native and compressed pixel data (JPEG lossless and JPEG-LS through
pylibjpeg-libjpeg, JPEG 2000 through pylibjpeg-openjpeg). When pydicom has no decoder plugin for
a compressed transfer syntax, SimpleITK decodes the file instead: its bundled GDCM handles JPEG
lossless, JPEG-LS, JPEG 2000 and RLE with no extra package, so it is the better reader exactly
there. Only when neither can decode is a :class:`DicomInputError` raised, naming the package to
install.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.uid import UID

from resample_med.io.dicom_headers import read_dataset
from resample_med.io.errors import DicomInputError, MissingDecoderError

DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg",  # JPEG extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",  # JPEG lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",  # JPEG lossless, first-order prediction
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",  # RLE lossless
}
"""The pip package that gives pydicom a decoder for each compressed transfer syntax."""

FALLBACK_DECODER_PACKAGE = "python-gdcm"
"""Decodes every compressed transfer syntax pydicom knows."""


def pydicom_can_decode(transfer_syntax: str) -> bool:
    """Whether pydicom has a working decoder plugin for ``transfer_syntax``."""
    from pydicom.pixels import get_decoder

    try:
        return bool(get_decoder(UID(transfer_syntax)).is_available)
    except NotImplementedError:
        return False


def simpleitk_decode_hu(path: Path) -> np.ndarray | None:
    """(Y, X) float32 HU decoded by SimpleITK (GDCM), which applies RescaleSlope/Intercept itself; None on failure."""
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        return None
    array = sitk.GetArrayFromImage(image)
    return array.reshape(array.shape[-2:]).astype(np.float32) if array.size else None


def missing_decoder_error(path: Path, transfer_syntax: str) -> MissingDecoderError:
    """The error for compressed pixel data nobody here can decode, naming the package to install."""
    package = DECODER_PACKAGES.get(transfer_syntax, FALLBACK_DECODER_PACKAGE)
    name = UID(transfer_syntax).name or transfer_syntax
    return MissingDecoderError(
        path,
        f"pixel data is compressed as '{name}' and no decoder is installed: "
        f"pip install {package} (or {FALLBACK_DECODER_PACKAGE})",
    )


def decode_hu(path: Path, transfer_syntax: str, shape: tuple[int, int], slope: float, intercept: float) -> np.ndarray:
    """(Y, X) float32 HU of one slice: stored values x RescaleSlope + RescaleIntercept.

    Args:
        path: the DICOM file.
        transfer_syntax: its TransferSyntaxUID (from the header record).
        shape: expected (Rows, Columns).
        slope, intercept: RescaleSlope and RescaleIntercept.

    Raises:
        MissingDecoderError: compressed data and no decoder installed.
        DicomInputError: unreadable or truncated pixel data, or wrong size.
    """
    if transfer_syntax and UID(transfer_syntax).is_compressed and not pydicom_can_decode(transfer_syntax):
        hu = simpleitk_decode_hu(path)
        if hu is None:
            raise missing_decoder_error(path, transfer_syntax)
    else:
        ds = read_dataset(path, pixels=True)
        if ds is None:
            raise DicomInputError(path, "is no longer a readable DICOM file")
        if "PixelData" not in ds:
            raise DicomInputError(path, "has no PixelData")
        try:
            stored = ds.pixel_array
        except Exception as exc:  # noqa: BLE001 - truncated or malformed pixel data, reported as ours
            raise DicomInputError(path, f"cannot decode pixel data ({type(exc).__name__}: {exc})") from exc
        hu = stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    if hu.shape != tuple(shape):
        raise DicomInputError(path, f"decoded pixel array has shape {hu.shape}, header says {tuple(shape)}")
    if not np.isfinite(hu).all():
        raise DicomInputError(path, "decoded pixel values are not finite")
    return hu
