"""resample-med: sparse-view CT reconstruction with a latent diffusion prior (ReSample, ICLR 2024).

The one engine behind the napari plugin, the ``resample-med`` command line and research scripts.
Submodules: :mod:`geometry`, :mod:`operators`, :mod:`io`, :mod:`models`, :mod:`sampling`,
:mod:`training`, :mod:`metrics`, :mod:`pipeline`, :mod:`cli`.
"""

__version__ = "0.1.0"
