"""CT data in and out: DICOM series and NIfTI in, derived DICOM series, NIfTI and PNG previews out.

Reading goes through MONAI (:class:`PositionSortedDicomReader` is a ``monai.data.ImageReader``
run by ``monai.transforms.LoadImage``), slices are ordered by ImagePositionPatient along the slice
normal, and every input problem is a :class:`DicomInputError` naming the file and the problem.

>>> vol = load_volume("path/to/dicom_folder")            # doctest: +SKIP
>>> for s in iter_model_slices(vol):                      # doctest: +SKIP
...     recon_256 = my_reconstruction(s.hu)               # (256, 256) HU
...     back = s.to_source(recon_256)                     # (Y, X) on the source grid
"""

from resample_med._lazy import lazy_namespace

_EXPORTS: dict[str, str | None] = {
    "PositionSortedDicomReader": "dicom_reader",
    "iter_series_slices": "dicom_reader",
    "load_series": "dicom_reader",
    "open_series": "dicom_reader",
    "rescale_for_int16": "dicom_writer",
    "write_derived_series": "dicom_writer",
    "SeriesInfo": "discovery",
    "discover_series": "discovery",
    "select_series": "discovery",
    "DicomInputError": "errors",
    "DicomInputWarning": "errors",
    "MissingDecoderError": "errors",
    "OutputPathError": "errors",
    "load_volume": "load",
    "MODEL_GRID_PRESETS": "model_grid",
    "ModelGrid": "model_grid",
    "ModelGridConfig": "model_grid",
    "ModelSlice": "model_grid",
    "iter_model_slices": "model_grid",
    "load_nifti": "nifti",
    "write_nifti": "nifti",
    "HU_WINDOWS": "preview",
    "HUWindow": "preview",
    "to_display": "preview",
    "write_png_preview": "preview",
    "write_contact_sheet": "preview",
    "SAMPLE_CTS": "sample",
    "DEFAULT_SAMPLE": "sample",
    "load_sample_ct": "sample",
    "sample_ct_path": "sample",
    "CTVolume": "volume",
}
"""Public name -> submodule defining it (``None``: a submodule), imported on first use."""

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS)
