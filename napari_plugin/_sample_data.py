"""napari sample-data contribution: the real CT shipped in ``sample_data/`` as an HU image layer."""

from __future__ import annotations

from napari_plugin._reader import LayerData, volume_layer_data

SAMPLE_LAYER_NAME = "sample CT"


def sample_ct() -> list[LayerData]:
    """The CT of :func:`resample_med.io.load_sample_ct` (no network, no ../shared), placed in mm."""
    from resample_med.io import load_sample_ct

    return [volume_layer_data(load_sample_ct(), name=SAMPLE_LAYER_NAME)]
