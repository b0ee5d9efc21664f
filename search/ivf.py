"""An inverted-file (IVF) index over one part's unit vectors: probe a few lists, not every row.

Why: an exact scan of a million 384-d int8 vectors costs hundreds of milliseconds a query on two
cores, whatever the query; a server that answers at once must look at a few percent of them.
The vectors are clustered by spherical k-means into about ``sqrt(rows)`` lists; a query scores
the centroids, takes the ``NPROBE`` nearest lists and scores only their rows (int8, stored in list
order so each list is one contiguous read of the memory-mapped file). The engine then re-scores
the best candidates exactly from the float16 copy, as it does after a full scan.

Built in numpy from the part's own files (``embeddings.f16``, ``embeddings.i8``, ``scales.f32``)
for parts of at least ``MIN_ROWS`` rows; smaller parts are scanned whole (a scan of 64k rows takes
milliseconds). Files in the part's folder::

    ivf_centroids.f32   (lists, dim) float32, unit length
    ivf_offsets.i64     (lists + 1,) start of each list in the list-ordered arrays
    ivf_rows.i32        (rows,) the part row of each list-ordered vector
    ivf_vectors.i8      (rows, dim) the int8 vectors in list order
    ivf_scales.f32      (rows,) their scales
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

MIN_ROWS = 65_536
NPROBE = 32
TRAIN_ROWS_PER_LIST = 40
KMEANS_ITERATIONS = 12
ASSIGN_CHUNK = 32_768
FILES = ("ivf_centroids.f32", "ivf_offsets.i64", "ivf_rows.i32", "ivf_vectors.i8", "ivf_scales.f32")


def list_count(rows: int) -> int:
    """How many lists a part of ``rows`` rows gets: about ``sqrt(rows)`` (a million rows: 1,000)."""
    return max(16, int(round(np.sqrt(rows))))


def _nearest(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The nearest centroid (largest dot product) of each row, in chunks."""
    out = np.empty(len(vectors), dtype=np.int32)
    for start in range(0, len(vectors), ASSIGN_CHUNK):
        chunk = np.asarray(vectors[start:start + ASSIGN_CHUNK], dtype=np.float32)
        out[start:start + len(chunk)] = np.argmax(chunk @ centroids.T, axis=1)
    return out


def train(vectors: np.ndarray, lists: int, seed: int = 0) -> np.ndarray:
    """Spherical k-means centroids of a sample of ``vectors`` (rows of unit length)."""
    rng = np.random.default_rng(seed)
    rows = len(vectors)
    sample_rows = np.sort(rng.choice(rows, size=min(rows, lists * TRAIN_ROWS_PER_LIST), replace=False))
    sample = np.asarray(vectors[sample_rows], dtype=np.float32)
    centroids = sample[rng.choice(len(sample), size=lists, replace=False)].copy()
    for _ in range(KMEANS_ITERATIONS):
        assigned = _nearest(sample, centroids)
        counts = np.bincount(assigned, minlength=lists)
        order = np.argsort(assigned, kind="stable")
        filled = np.flatnonzero(counts)
        starts = (np.cumsum(counts) - counts)[filled]
        sums = np.zeros_like(centroids)
        sums[filled] = np.add.reduceat(sample[order], starts, axis=0)
        empty = np.flatnonzero(counts == 0)
        sums[empty] = sample[rng.choice(len(sample), size=len(empty), replace=False)]  # reseed empty lists
        centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return centroids.astype(np.float32)


def build(folder: str, rows: int, dim: int) -> None:
    """Write the IVF files of the part in ``folder`` from its vector files (atomically: renamed last)."""
    exact = np.memmap(os.path.join(folder, "embeddings.f16"), dtype=np.float16, mode="r", shape=(rows, dim))
    centroids = train(exact, list_count(rows))
    assigned = _nearest(exact, centroids)
    order = np.argsort(assigned, kind="stable").astype(np.int32)
    offsets = np.zeros(len(centroids) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(np.bincount(assigned, minlength=len(centroids)))
    int8 = np.memmap(os.path.join(folder, "embeddings.i8"), dtype=np.int8, mode="r", shape=(rows, dim))
    scales = np.fromfile(os.path.join(folder, "scales.f32"), dtype=np.float32)
    tmp = {name: os.path.join(folder, f"{name}.tmp") for name in FILES}
    centroids.tofile(tmp["ivf_centroids.f32"])
    offsets.tofile(tmp["ivf_offsets.i64"])
    order.tofile(tmp["ivf_rows.i32"])
    scales[order].tofile(tmp["ivf_scales.f32"])
    with open(tmp["ivf_vectors.i8"], "wb") as f:
        for start in range(0, rows, ASSIGN_CHUNK):
            f.write(np.ascontiguousarray(int8[order[start:start + ASSIGN_CHUNK]]).tobytes())
    for name in FILES[1:]:
        os.replace(tmp[name], os.path.join(folder, name))
    os.replace(tmp[FILES[0]], os.path.join(folder, FILES[0]))  # the centroids mark the index complete


def exists(folder: str) -> bool:
    """Whether the part in ``folder`` has a complete IVF index."""
    return all(os.path.exists(os.path.join(folder, name)) for name in FILES)


@dataclass
class IvfIndex:
    """One part's IVF index: centroids, offsets, rows and scales in memory; list vectors read per probe.

    The lists are read with ``pread``, one contiguous read per list, not memory-mapped: mapped
    pages of a file come in large folios on current kernels and would swell the process's resident
    set towards the file's size; reads leave the file in the page cache only.
    """

    centroids: np.ndarray
    offsets: np.ndarray
    rows: np.ndarray
    scales: np.ndarray
    dim: int
    fd: int

    @classmethod
    def open(cls, folder: str, rows: int, dim: int) -> IvfIndex:
        """Open the IVF files of the part in ``folder`` (the list vectors stay on disk)."""
        read = lambda name, dtype: np.fromfile(os.path.join(folder, name), dtype=dtype)  # noqa: E731
        index = cls(read("ivf_centroids.f32", np.float32).reshape(-1, dim), read("ivf_offsets.i64", np.int64),
                    read("ivf_rows.i32", np.int32), read("ivf_scales.f32", np.float32), dim,
                    os.open(os.path.join(folder, "ivf_vectors.i8"), os.O_RDONLY))
        if len(index.rows) != rows or index.offsets[-1] != rows:
            index.close()
            raise ValueError(f"the IVF index in {folder} does not match its part ({rows} rows); rebuild it with "
                             "'plm-index search --index INDEX --rebuild'")
        return index

    def close(self) -> None:
        """Close the list file (also done when the index is dropped)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()

    def list_vectors(self, start: int, end: int) -> np.ndarray:
        """The int8 vectors of list-ordered rows ``start:end`` (one read)."""
        data = os.pread(self.fd, (end - start) * self.dim, start * self.dim)
        return np.frombuffer(data, dtype=np.int8).reshape(end - start, self.dim)

    def probe(self, qvec: np.ndarray, nprobe: int = NPROBE) -> tuple[np.ndarray, np.ndarray]:
        """The rows of the ``nprobe`` lists nearest ``qvec`` and their approximate (int8) cosines."""
        q = qvec.astype(np.float32)
        nprobe = min(nprobe, len(self.centroids))
        near = np.argpartition(-(self.centroids @ q), nprobe - 1)[:nprobe]
        spans = sorted((int(self.offsets[i]), int(self.offsets[i + 1])) for i in near)
        spans = [(s, e) for s, e in spans if e > s]
        if not spans:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        # List by list: each widened block stays in cache (one concatenated block was 3x slower).
        cosines = [(self.list_vectors(s, e).astype(np.float32) @ q) * self.scales[s:e] for s, e in spans]
        rows = np.concatenate([self.rows[s:e] for s, e in spans]).astype(np.int64)
        return rows, np.concatenate(cosines)
