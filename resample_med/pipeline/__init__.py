"""The one engine behind the command line, the napari widget and research scripts.

CT slices in HU -> simulated sparse-view measurements -> the linear problem in model units ->
any reconstruction method of :mod:`resample_med.sampling` -> HU, slice by slice or for a whole
volume, with resumable checkpoints::

    from resample_med.io import load_volume
    from resample_med.models import load_default_model
    from resample_med.pipeline import AcquisitionConfig, reconstruct_volume

    result = reconstruct_volume(load_volume("study/"), AcquisitionConfig(n_views=30),
                                method="resample", prior=load_default_model(), config="fast")
    result.volume.hu  # (Z, Y, X) HU on the source grid
    # slices consistent along z (volume mode, tuned z weight):
    result = reconstruct_volume(..., volume_mode=VolumeMode())

Modules: :mod:`.acquisition` (what is measured), :mod:`.measurements` (simulation and
linearisation), :mod:`.slices` (batched reconstruction of slices), :mod:`.volume` (volumes),
:mod:`.slabs` (volume mode: slices coupled along z over overlapping slabs),
:mod:`.checkpoint` (resume state), :mod:`.sinogram_file` (measurements on disk),
:mod:`.seeding` (per-slice random streams), :mod:`.studies` (many studies, local or on a Ray
cluster through :mod:`.ray_executor`).
"""

from resample_med._lazy import lazy_namespace

_EXPORTS: dict[str, str | None] = {
    "ACQUISITION_PRESETS": "acquisition",
    "DEFAULT_ACQUISITION": "acquisition",
    "GEOMETRY_KINDS": "acquisition",
    "AcquisitionConfig": "acquisition",
    "CheckpointMismatchError": "checkpoint",
    "SliceCheckpoint": "checkpoint",
    "AttenuationOperator": "measurements",
    "LinearProblem": "measurements",
    "Measurements": "measurements",
    "linearise": "measurements",
    "noise_variance": "measurements",
    "projector_for": "measurements",
    "simulate_measurements": "measurements",
    "SinogramFileError": "sinogram_file",
    "is_sinogram_file": "sinogram_file",
    "load_measurements": "sinogram_file",
    "save_measurements": "sinogram_file",
    "VolumeMode": "slabs",
    "reconstruct_slabs": "slabs",
    "SliceReconstruction": "slices",
    "reconstruct_slices": "slices",
    "VolumeReconstruction": "volume",
    "reconstruct_input": "volume",
    "reconstruct_volume": "volume",
    "select_slices": "volume",
    "simulate_model_slices": "volume",
    "SharedStorageError": "studies",
    "reconstruct_studies": "studies",
}
"""Public name -> submodule defining it (``None``: a submodule), imported on first use."""

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS)
