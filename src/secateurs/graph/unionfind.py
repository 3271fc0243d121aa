"""Couplings between integer ids: which channel slots must be removed together.

Unions are only recorded (as pairs, or whole arrays of pairs); the classes are computed once
at the end as connected components, in compiled code.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


class Couplings:
    def __init__(self) -> None:
        self.size = 0
        self._pairs: list[tuple[int, int]] = []
        self._arrays: list[tuple[np.ndarray, np.ndarray]] = []

    def new(self, count: int = 1) -> range:
        start = self.size
        self.size += count
        return range(start, start + count)

    def union(self, a: int, b: int) -> None:
        self._pairs.append((a, b))

    def union_many(self, a, b) -> None:
        """Couple ``a[i]`` with ``b[i]`` for every i (negative ids are skipped)."""
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        keep = (a >= 0) & (b >= 0)
        self._arrays.append((a[keep], b[keep]))

    def labels(self) -> np.ndarray:
        """A class label for every id; ids coupled directly or through others share one."""
        pairs = np.array(self._pairs, dtype=np.int64).reshape(-1, 2)
        a = np.concatenate([pairs[:, 0], *(x for x, _ in self._arrays)])
        b = np.concatenate([pairs[:, 1], *(y for _, y in self._arrays)])
        edges = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(self.size,) * 2)
        return connected_components(edges, directed=False)[1]
