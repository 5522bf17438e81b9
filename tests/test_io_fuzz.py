"""Fuzzing the reader: mutated header fields and bytes must give a volume or a DicomInputError.

Any other exception (a crash deep inside pydicom, numpy, MONAI or a decoder) fails the test.
"""

from __future__ import annotations

import functools
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from io_synthetic import slice_hu, write_slice
from pydicom.datadict import tag_for_keyword

from resample_med.io import DicomInputError, iter_model_slices, load_volume, sample_ct_path

FIELDS = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PixelSpacing",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "RescaleSlope",
    "RescaleIntercept",
    "Modality",
    "SOPClassUID",
    "SeriesInstanceUID",
    "SliceThickness",
    "InstanceNumber",
    "SeriesNumber",
    "PixelData",
)
INTERESTING = [
    b"",
    b"0",
    b"-1",
    b"1e400",
    b"nan",
    b"abc",
    b"1\\2",
    b"1\\2\\3\\4\\5\\6\\7",
    b"\x00\x00",
    b"\xff\xff\xff\xff",
    b"65535",
    b"0.5",
]
SETTINGS = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@functools.cache
def _valid_bytes() -> bytes:
    """One valid 16x12 CT slice, made once so that every example mutates the same bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_slice(
            Path(tmp) / "valid.dcm",
            slice_hu(2, 16, 12),
            position=(0.0, 0.0, 0.0),
            series_uid="1.2.3.4",
            study_uid="1.2.3",
            frame_uid="1.2.5",
        )
        return path.read_bytes()


def _valid_file(folder: Path) -> bytes:
    """Write the valid slice to ``folder / "valid.dcm"`` and return its bytes."""
    (folder / "valid.dcm").write_bytes(_valid_bytes())
    return _valid_bytes()


def _check(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            volume = load_volume(path)
        except DicomInputError as exc:
            assert str(path) in str(exc) or str(path.parent) in str(exc)
            return
        assert volume.hu.dtype == np.float32 and np.isfinite(volume.hu).all()
        for s in iter_model_slices(volume, size=16):
            assert s.hu.shape == (16, 16)


LONG_LENGTH_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UN", b"UR", b"UT"}


def _with_field(raw: bytes, keyword: str, value: bytes | None) -> bytes:
    """``raw`` (explicit VR little endian) with the value of ``keyword`` replaced, or the element removed.

    Works on the bytes, so pydicom's validation on writing cannot stop an invalid value.
    """
    tag = tag_for_keyword(keyword)
    needle = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    start = raw.index(needle, 132 + 12)  # after the preamble and the start of the file meta
    vr = raw[start + 4 : start + 6]
    if vr in LONG_LENGTH_VRS:
        header, length = 12, struct.unpack("<I", raw[start + 8 : start + 12])[0]
    else:
        header, length = 8, struct.unpack("<H", raw[start + 6 : start + 8])[0]
    end = start + header + length
    if value is None:
        return raw[:start] + raw[end:]
    value = value + b" " * (len(value) % 2)
    size = struct.pack("<I", len(value)) if header == 12 else struct.pack("<H", len(value))
    return raw[: start + header - len(size)] + size + value + raw[end:]


@SETTINGS
@given(
    field=st.sampled_from(FIELDS),
    value=st.one_of(st.none(), st.sampled_from(INTERESTING), st.binary(max_size=24)),
)
def test_mutated_header_fields(field: str, value: bytes | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        raw = _valid_file(folder)
        (folder / "valid.dcm").unlink()
        path = folder / "mutated.dcm"
        path.write_bytes(_with_field(raw, field, value))
        _check(path)


def test_field_mutation_changes_only_that_field(tmp_path: Path) -> None:
    raw = _valid_file(tmp_path)
    (tmp_path / "a.dcm").write_bytes(_with_field(raw, "RescaleIntercept", b"-1000"))
    (tmp_path / "b.dcm").write_bytes(_with_field(raw, "SliceThickness", None))
    a, b, original = (pydicom.dcmread(tmp_path / n) for n in ("a.dcm", "b.dcm", "valid.dcm"))
    assert float(a.RescaleIntercept) == -1000 and a.Rows == original.Rows
    assert "SliceThickness" not in b and "SliceThickness" in original
    np.testing.assert_array_equal(load_volume(tmp_path / "a.dcm").hu, load_volume(tmp_path / "valid.dcm").hu + 24)


@SETTINGS
@given(data=st.data())
def test_mutated_bytes(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        raw = bytearray(_valid_file(folder))
        (folder / "valid.dcm").unlink()
        n_edits = data.draw(st.integers(1, 8))
        for _ in range(n_edits):
            position = data.draw(st.integers(0, len(raw) - 1))
            raw[position] = data.draw(st.integers(0, 255))
        if data.draw(st.booleans()):
            raw = raw[: data.draw(st.integers(0, len(raw)))]
        path = folder / "mutated.dcm"
        path.write_bytes(bytes(raw))
        _check(path)


@pytest.mark.slow
@settings(max_examples=15, deadline=None, database=None)
@given(data=st.data())
def test_mutated_jpeg2000_bytes(data: st.DataObject) -> None:
    raw = bytearray(sample_ct_path("head").read_bytes())
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(len(raw) // 2, len(raw) - 1))  # inside the compressed codestream
        raw[position] = data.draw(st.integers(0, 255))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mutated.dcm"
        path.write_bytes(bytes(raw))
        _check(path)


def test_valid_file_passes_the_check(tmp_path: Path) -> None:
    path = tmp_path / "v.dcm"
    path.write_bytes(_valid_file(tmp_path))
    assert load_volume(path).shape == (1, 16, 12)
    _check(path)


def test_unknown_transfer_syntax_is_our_error(tmp_path: Path) -> None:
    """Found by test_mutated_bytes: a zeroed byte in TransferSyntaxUID crashed inside pydicom.uid."""
    raw = _valid_bytes()
    syntax = b"1.2.840.10008.1.2.1"
    position = raw.index(syntax) + 3
    path = tmp_path / "m.dcm"
    path.write_bytes(raw[:position] + b"\x00" + raw[position + 1 :])
    with pytest.raises(DicomInputError, match="not a known transfer syntax"):
        load_volume(path)
