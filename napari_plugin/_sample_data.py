"""napari sample-data contributions: the real CT slices shipped in ``sample_data/`` as HU image layers.

``sample_ct`` is the chest slice (an anatomy the shipped prior was trained for); ``sample_ct_head``
is the head slice, outside the prior's training distribution (the out-of-distribution example).
The menu names and layer names say which is which.
"""

from __future__ import annotations

from napari_plugin._reader import LayerData, volume_layer_data

SAMPLE_LAYER_NAMES = {"chest": "sample CT chest (in distribution)", "head": "sample CT head (out of distribution)"}
"""Layer name of each sample."""


def sample_ct() -> list[LayerData]:
    """The chest sample CT (no network, no ../shared), placed in mm."""
    return _sample("chest")


def sample_ct_head() -> list[LayerData]:
    """The head sample CT, outside the prior's training distribution, placed in mm."""
    return _sample("head")


def _sample(name: str) -> list[LayerData]:
    from resample_med.io import load_sample_ct

    return [volume_layer_data(load_sample_ct(name), name=SAMPLE_LAYER_NAMES[name])]
