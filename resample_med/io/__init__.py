"""CT data in and out: DICOM series and NIfTI in, derived DICOM series, NIfTI and PNG previews out.

Reading goes through MONAI (:class:`PositionSortedDicomReader` is a ``monai.data.ImageReader``
run by ``monai.transforms.LoadImage``), slices are ordered by ImagePositionPatient along the slice
normal, and every input problem is a :class:`DicomInputError` naming the file and the problem.

>>> vol = load_volume("path/to/dicom_folder")            # doctest: +SKIP
>>> for s in iter_model_slices(vol):                      # doctest: +SKIP
...     recon_256 = my_reconstruction(s.hu)               # (256, 256) HU
...     back = s.to_source(recon_256)                     # (Y, X) on the source grid
"""

from resample_med.io.dicom_reader import PositionSortedDicomReader, iter_series_slices, load_series, open_series
from resample_med.io.dicom_writer import rescale_for_int16, write_derived_series
from resample_med.io.discovery import SeriesInfo, discover_series, select_series
from resample_med.io.errors import DicomInputError, DicomInputWarning, MissingDecoderError, OutputPathError
from resample_med.io.load import load_volume
from resample_med.io.model_grid import MODEL_GRID_PRESETS, ModelGrid, ModelGridConfig, ModelSlice, iter_model_slices
from resample_med.io.nifti import load_nifti, write_nifti
from resample_med.io.preview import HU_WINDOWS, HUWindow, to_display, write_png_preview
from resample_med.io.sample import SAMPLE_CTS, load_sample_ct, sample_ct_path
from resample_med.io.volume import CTVolume

__all__ = [
    "HU_WINDOWS",
    "MODEL_GRID_PRESETS",
    "SAMPLE_CTS",
    "CTVolume",
    "DicomInputError",
    "DicomInputWarning",
    "HUWindow",
    "MissingDecoderError",
    "ModelGrid",
    "ModelGridConfig",
    "ModelSlice",
    "OutputPathError",
    "PositionSortedDicomReader",
    "SeriesInfo",
    "discover_series",
    "iter_model_slices",
    "iter_series_slices",
    "load_nifti",
    "load_sample_ct",
    "load_series",
    "load_volume",
    "open_series",
    "rescale_for_int16",
    "sample_ct_path",
    "select_series",
    "to_display",
    "write_derived_series",
    "write_nifti",
    "write_png_preview",
]
