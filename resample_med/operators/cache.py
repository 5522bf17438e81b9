"""Build-once cache of projectors: in memory (LRU) and on disk, keyed by geometry.

Disk layout: ``$RESAMPLE_MED_CACHE`` (default ``~/.cache/resample_med/operators``) holds one
``<kind>-<geometry.cache_key()>-v<FORMAT_VERSION>.pt`` per geometry with ``A`` and ``A^T`` as CSR
component tensors (int32 indices, float32 values); files are written to a temporary name and renamed,
so readers never see a partial file, and loaded memory-mapped. A geometry whose angles are a subset of
a full-view operator already in memory is served by that operator's rows instead of a new build.

The folder is capped (:data:`DEFAULT_CACHE_LIMIT_GB`, or ``$RESAMPLE_MED_CACHE_LIMIT_GB``; one fan-beam
512x512 geometry takes about 1.3 GB): after each new file, the least recently used files are deleted
until the folder fits (a file's modification time records its last use). ``resample-med cache info``
lists the folder, ``resample-med cache clear`` empties it (:func:`cache_info`, :func:`clear_disk_cache`).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resample_med.geometry import Geometry, geometry_from_dict
from resample_med.operators.joseph import build_system_matrix
from resample_med.operators.projector import Projector
from resample_med.operators.sparse import SparsePair, make_csr

CACHE_ENV_VAR = "RESAMPLE_MED_CACHE"
"""Environment variable naming the on-disk cache folder."""

DEFAULT_CACHE_DIR = Path("~/.cache/resample_med/operators")
"""Cache folder when ``RESAMPLE_MED_CACHE`` is unset."""

CACHE_LIMIT_ENV_VAR = "RESAMPLE_MED_CACHE_LIMIT_GB"
"""Environment variable with the size cap of the on-disk cache in GB (10^9 bytes)."""

DEFAULT_CACHE_LIMIT_GB = 5.0
"""Size cap of the on-disk cache when ``RESAMPLE_MED_CACHE_LIMIT_GB`` is unset (a few large geometries)."""

CACHE_FILE_PATTERN = "*-v*.pt"
"""Names of cache files (``<kind>-<key>-v<version>.pt``); nothing else in the folder is touched."""

FORMAT_VERSION = 2
"""Bump when the system-matrix definition or the file layout changes (old files are then ignored)."""

MEMORY_CACHE_ENTRIES = 8
"""Projectors kept in memory (least recently used dropped first)."""

ANGLE_MATCH_TOL_RAD = 1e-9
"""Angles closer than this count as the same view when serving a subset from a cached operator."""

_LOCK = threading.RLock()  # napari workers and the GUI thread may ask for projectors at once
_BASE: OrderedDict[Geometry, SparsePair] = OrderedDict()  # CPU float32 matrices
_PROJECTORS: OrderedDict[tuple[Geometry, str, torch.dtype], Projector] = OrderedDict()


def cache_dir() -> Path:
    """The on-disk cache folder (created on first write)."""
    return Path(os.environ.get(CACHE_ENV_VAR, str(DEFAULT_CACHE_DIR))).expanduser()


def cache_path(geometry: Geometry) -> Path:
    """File holding ``geometry``'s system matrix."""
    return cache_dir() / f"{geometry.kind}-{geometry.cache_key()}-v{FORMAT_VERSION}.pt"


def cache_limit_bytes() -> int:
    """The size cap of the on-disk cache in bytes (``$RESAMPLE_MED_CACHE_LIMIT_GB`` or the default)."""
    text = os.environ.get(CACHE_LIMIT_ENV_VAR)
    if text is None:
        return int(DEFAULT_CACHE_LIMIT_GB * 1e9)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{CACHE_LIMIT_ENV_VAR}={text!r}: give the cache size cap in GB, e.g. 5") from None
    if value < 0:
        raise ValueError(f"{CACHE_LIMIT_ENV_VAR}={text!r}: the cap must be >= 0 GB")
    return int(value * 1e9)


@dataclass(frozen=True)
class CacheFile:
    """One file of the on-disk cache: path, size in bytes and last use (seconds since the epoch)."""

    path: Path
    size_bytes: int
    last_used: float


@dataclass(frozen=True)
class CacheInfo:
    """The on-disk cache: its folder, files (least recently used first), total size and cap in bytes."""

    folder: Path
    files: list[CacheFile]
    limit_bytes: int

    @property
    def total_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)


def cache_info() -> CacheInfo:
    """What the on-disk cache holds, least recently used first."""
    folder = cache_dir()
    files = []
    for path in folder.glob(CACHE_FILE_PATTERN) if folder.is_dir() else []:
        try:
            stat = path.stat()
        except FileNotFoundError:  # evicted by another process meanwhile
            continue
        files.append(CacheFile(path, stat.st_size, stat.st_mtime))
    files.sort(key=lambda f: f.last_used)
    return CacheInfo(folder, files, cache_limit_bytes())


def evict(limit_bytes: int | None = None, keep: Path | None = None) -> list[CacheFile]:
    """Delete least recently used cache files until the folder fits ``limit_bytes`` (default: the cap).

    ``keep`` (the file just written) is never deleted, even when it alone exceeds the cap. Returns
    the deleted files.
    """
    info = cache_info()
    limit = info.limit_bytes if limit_bytes is None else limit_bytes
    total = info.total_bytes
    removed = []
    for entry in info.files:
        if total <= limit:
            break
        if keep is not None and entry.path == keep:
            continue
        entry.path.unlink(missing_ok=True)
        total -= entry.size_bytes
        removed.append(entry)
    return removed


def clear_disk_cache() -> list[CacheFile]:
    """Delete every cache file (and forget the in-memory projectors); returns what was deleted."""
    clear_memory_cache()
    return evict(limit_bytes=0)


def _touch(path: Path) -> None:
    """Record a use of ``path`` for least-recently-used eviction (best effort on read-only caches)."""
    try:
        now = time.time()
        os.utime(path, (now, now))
    except OSError:
        pass


def clear_memory_cache() -> None:
    """Forget every projector held in memory (disk files stay)."""
    with _LOCK:
        _BASE.clear()
        _PROJECTORS.clear()


def _remember(cache: OrderedDict, key: object, value: object) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > MEMORY_CACHE_ENTRIES:
        cache.popitem(last=False)


def _save(geometry: Geometry, system: SparsePair, path: Path) -> None:
    """Atomically write ``system`` to ``path`` (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"geometry": geometry.to_dict()}
    for name, matrix in (("a", system.matrix), ("at", system.matrix_t)):
        payload[f"{name}_crow"] = matrix.crow_indices()
        payload[f"{name}_col"] = matrix.col_indices()
        payload[f"{name}_val"] = matrix.values()
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(geometry: Geometry, path: Path) -> SparsePair | None:
    """The cached pair at ``path``, or None when the file is missing, unreadable or for another geometry."""
    try:
        payload = torch.load(path, mmap=True, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError):
        return None
    if geometry_from_dict(payload["geometry"]) != geometry:
        return None
    n_rays, n_pixels = geometry.n_views * geometry.det_count, geometry.image_size**2
    matrices = [
        make_csr(payload[f"{name}_crow"], payload[f"{name}_col"], payload[f"{name}_val"], size)
        for name, size in (("a", (n_rays, n_pixels)), ("at", (n_pixels, n_rays)))
    ]
    return SparsePair(*matrices)


def _subset_of_cached(geometry: Geometry) -> Projector | None:
    """A projector for ``geometry`` made of rows of a cached operator whose angles contain its angles."""
    wanted = np.asarray(geometry.angles)
    for full, system in _BASE.items():
        if full == geometry or not full.same_except_angles(geometry):
            continue
        have = np.asarray(full.angles)
        distance = np.abs(wanted[:, None] - have[None, :])
        nearest = distance.argmin(axis=1)
        if np.all(distance[np.arange(wanted.size), nearest] <= ANGLE_MATCH_TOL_RAD):
            return Projector(full, system).subset(nearest.tolist())
    return None


def _base_system(geometry: Geometry) -> SparsePair:
    """CPU float32 ``(A, A^T)`` for ``geometry``: from memory, a cached superset, disk, or a fresh build."""
    if geometry in _BASE:
        _BASE.move_to_end(geometry)
        return _BASE[geometry]
    from_superset = _subset_of_cached(geometry)
    if from_superset is not None:
        system = from_superset.system
    else:
        path = cache_path(geometry)
        loaded = _load(geometry, path) if path.is_file() else None
        if loaded is None:
            system = SparsePair.from_scipy(build_system_matrix(geometry), torch.float32)
            _save(geometry, system, path)
            evict(keep=path)
        else:
            _touch(path)
            system = loaded
    _remember(_BASE, geometry, system)
    return system


def make_projector(
    geometry: Geometry, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Projector:
    """The (cached) :class:`Projector` for ``geometry`` on ``device`` (default CPU) with ``dtype`` values.

    The matrix is built once per geometry (Joseph's method, a few seconds for 512^2 x 180 fan views),
    stored on disk under :func:`cache_dir` and reused across processes. Thread-safe.
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    key = (geometry, str(device), dtype)
    with _LOCK:
        if key in _PROJECTORS:
            _PROJECTORS.move_to_end(key)
            return _PROJECTORS[key]
        system = _base_system(geometry)
        if device.type != "cpu" or dtype != system.dtype:
            system = system.to(device, dtype)
        projector = Projector(geometry, system)
        _remember(_PROJECTORS, key, projector)
        return projector
