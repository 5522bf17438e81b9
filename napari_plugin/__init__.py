"""napari plugin of resample-med: reconstruction dock widget, CT reader, derived-DICOM writer and sample data.

The plugin holds no algorithm: it calls :mod:`resample_med.pipeline` (simulation and
reconstruction) and :mod:`resample_med.io` (DICOM / NIfTI). Contributions are declared in the npe2
manifest ``napari_plugin/napari.yaml`` (the top-level ``napari.yaml`` links to it).
"""
