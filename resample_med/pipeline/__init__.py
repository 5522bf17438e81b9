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

Modules: :mod:`.acquisition` (what is measured), :mod:`.measurements` (simulation and
linearisation), :mod:`.slices` (batched reconstruction of slices), :mod:`.volume` (volumes),
:mod:`.checkpoint` (resume state), :mod:`.sinogram_file` (measurements on disk),
:mod:`.seeding` (per-slice random streams).
"""

from resample_med.pipeline.acquisition import (
    ACQUISITION_PRESETS,
    DEFAULT_ACQUISITION,
    GEOMETRY_KINDS,
    AcquisitionConfig,
)
from resample_med.pipeline.checkpoint import CheckpointMismatchError, SliceCheckpoint
from resample_med.pipeline.measurements import (
    AttenuationOperator,
    LinearProblem,
    Measurements,
    linearise,
    noise_variance,
    projector_for,
    simulate_measurements,
)
from resample_med.pipeline.sinogram_file import (
    SinogramFileError,
    is_sinogram_file,
    load_measurements,
    save_measurements,
)
from resample_med.pipeline.slices import SliceReconstruction, reconstruct_slices
from resample_med.pipeline.volume import (
    VolumeReconstruction,
    reconstruct_volume,
    select_slices,
    simulate_model_slices,
)

__all__ = [
    "ACQUISITION_PRESETS",
    "DEFAULT_ACQUISITION",
    "GEOMETRY_KINDS",
    "AcquisitionConfig",
    "AttenuationOperator",
    "CheckpointMismatchError",
    "LinearProblem",
    "Measurements",
    "SinogramFileError",
    "SliceCheckpoint",
    "SliceReconstruction",
    "VolumeReconstruction",
    "is_sinogram_file",
    "linearise",
    "load_measurements",
    "noise_variance",
    "projector_for",
    "reconstruct_slices",
    "reconstruct_volume",
    "save_measurements",
    "select_slices",
    "simulate_measurements",
    "simulate_model_slices",
]
