"""Error and warning types of :mod:`resample_med.io`.

Every problem with an input path is raised as :class:`DicomInputError` (a ``ValueError``) whose
message names the file or folder and the problem, never as an exception from deep inside pydicom,
SimpleITK or numpy. NaN or infinite values about to be written are a :class:`NonFiniteError`.
Problems the reader can work around (bad slices skipped when asked to, gaps between slices,
duplicate positions) are reported as :class:`DicomInputWarning`.
"""

from __future__ import annotations

from os import PathLike


class DicomInputError(ValueError):
    """An input file or folder cannot be used; the message names the path and the problem."""

    def __init__(self, path: str | PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class MissingDecoderError(DicomInputError):
    """Compressed pixel data that no installed decoder can read; the message names the package."""


class OutputPathError(ValueError):
    """An output path is unsafe (inside an input folder) or already exists without ``overwrite``."""

    def __init__(self, path: str | PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class NonFiniteError(ValueError):
    """NaN or infinite values where only finite HU may go (an input volume, a reconstruction about to be written).

    The message names what holds them, how many there are and the first slice.
    """


class OutputInUseError(OutputPathError):
    """Another run holds the lock on the output folder; the message names its pid and host."""


class DicomInputWarning(UserWarning):
    """An input problem that was worked around; the message says what was skipped or assumed."""


class OutputWarning(UserWarning):
    """An output-side problem that was worked around (a stale lock taken over, leftovers of a killed run removed)."""
