"""Ramp-type projection filters for filtered backprojection, applied with a zero-padded FFT.

The ramp is the band-limited Ram-Lak kernel of Kak & Slaney (1988), "Principles of Computerized
Tomographic Imaging", eq. 3.61, sampled at detector spacing ``a``:

    h(0) = 1 / (4 a^2),   h(n a) = -1 / (n^2 pi^2 a^2) for odd n,   0 for even n != 0,

and the filtered projection is the discrete convolution ``q(n a) = a sum_k h((n - k) a) p(k a)``
(eq. 3.62). Sampling the kernel in space (instead of ``|f|`` in frequency) avoids the DC offset of a
naive ramp. The convolution is done in Fourier space on a zero-padded length (no circular wrap).
Apodising windows multiply the kernel's response at normalised frequency ``nu`` in ``[0, 1/2]``
cycles per bin: Shepp-Logan ``sinc(nu)``, cosine ``cos(pi nu)``, Hann ``(1 + cos(2 pi nu)) / 2``.
"""

from __future__ import annotations

import math

import torch

FILTER_NAMES: tuple[str, ...] = ("ramp", "shepp-logan", "cosine", "hann")
"""Filters accepted by :func:`filter_projections`."""

MIN_PADDED_LENGTH = 64
"""Shortest FFT length; the padded length is the next power of two >= max(this, 2 * det_count)."""


def padded_length(det_count: int) -> int:
    """FFT length for ``det_count`` bins: the linear convolution of two D-long signals fits in 2D."""
    return max(MIN_PADDED_LENGTH, 1 << int(math.ceil(math.log2(2 * det_count))))


def _window(filter_name: str, nu: torch.Tensor) -> torch.Tensor:
    if filter_name == "ramp":
        return torch.ones_like(nu)
    if filter_name == "shepp-logan":
        return torch.sinc(nu)
    if filter_name == "cosine":
        return torch.cos(math.pi * nu)
    if filter_name == "hann":
        return 0.5 * (1.0 + torch.cos(2.0 * math.pi * nu))
    raise ValueError(f"unknown filter {filter_name!r}; choose one of {FILTER_NAMES}")


def fourier_filter(
    det_count: int,
    spacing_mm: float,
    filter_name: str = "ramp",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Real frequency response ``(P // 2 + 1,)`` of ``a * h`` (with window) for ``torch.fft.rfft`` of length P.

    Args:
        det_count: D, bins per projection.
        spacing_mm: the sample spacing ``a`` of the projections in mm.
    """
    length = padded_length(det_count)
    n = torch.arange(length, dtype=torch.float64)
    n = torch.where(n < length // 2, n, n - length)  # circular lags -P/2 .. P/2-1
    kernel = torch.zeros(length, dtype=torch.float64)
    kernel[0] = 0.25
    odd = n.remainder(2) == 1
    kernel[odd] = -1.0 / (math.pi * n[odd]) ** 2
    # a * h(n a) = kernel / a, see module docstring.
    response = torch.fft.rfft(kernel).real / spacing_mm
    response = response * _window(filter_name, torch.fft.rfftfreq(length, dtype=torch.float64))
    return response.to(device=device, dtype=dtype)


def filter_projections(projections: torch.Tensor, spacing_mm: float, filter_name: str = "ramp") -> torch.Tensor:
    """Convolve each row with the (windowed) Ram-Lak kernel: ``(..., V, D) -> (..., V, D)``, units / mm."""
    det_count = projections.shape[-1]
    length = padded_length(det_count)
    response = fourier_filter(det_count, spacing_mm, filter_name, projections.device, projections.dtype)
    spectrum = torch.fft.rfft(projections, n=length, dim=-1)
    return torch.fft.irfft(spectrum * response, n=length, dim=-1)[..., :det_count]
