"""Shadows: which channel unit each element of a traced tensor came from.

A shadow is a vector of unit ids along one dimension (the usual case: every element of
channel i belongs to unit ids[i]) or, after ops that move channels into other dimensions,
a full int64 tensor of the tensor's shape. -1 marks elements that come from no channel
(constants, padding); 0 is the blocked sentinel (model inputs, ignored modules).
"""

from __future__ import annotations

import numpy as np
import torch

NONE = -1
BLOCKED = 0


class Shadow:
    __slots__ = ("blocked", "dim", "full", "ids")

    def __init__(self, dim=None, ids=None, full=None, blocked=False) -> None:
        self.dim, self.ids, self.full, self.blocked = dim, ids, full, blocked

    @classmethod
    def vector(cls, dim: int, ids) -> Shadow:
        return cls(dim=dim, ids=np.asarray(ids, dtype=np.int64))

    def materialize(self, shape: tuple[int, ...]) -> torch.Tensor:
        """An int64 tensor of ``shape`` (possibly an expanded view) holding the ids."""
        if self.blocked:
            return torch.full((), BLOCKED, dtype=torch.int64).expand(shape)
        if self.full is not None:
            return self.full
        view = [1] * len(shape)
        view[self.dim] = -1
        return torch.from_numpy(self.ids).view(view).expand(shape)

    def along(self, dim: int, shape: tuple[int, ...]) -> list[np.ndarray]:
        """For each index of ``dim``, the distinct ids (>= 0) found in that slice."""
        size = shape[dim]
        if self.blocked:
            return [np.array([BLOCKED])] * size
        if self.full is None and self.dim == dim:
            return [self.ids[i : i + 1] if self.ids[i] >= 0 else self.ids[:0] for i in range(size)]
        if self.full is None:
            present = np.unique(self.ids[self.ids >= 0])
            return [present] * size
        rows = self.full.movedim(dim, 0).reshape(size, -1)
        lo, hi = rows.amin(1), rows.amax(1)
        if bool((lo == hi).all()):
            ids = lo.numpy()
            return [ids[i : i + 1] if ids[i] >= 0 else ids[:0] for i in range(size)]
        out = []
        for row in rows:
            u = torch.unique(row).numpy()
            out.append(u[u >= 0])
        return out

    def all_ids(self) -> np.ndarray:
        if self.blocked:
            return np.array([BLOCKED])
        values = self.ids if self.full is None else torch.unique(self.full).numpy()
        return np.unique(values[values >= 0])


def compress(full: torch.Tensor, prefer: tuple[int, ...] = (1, -1)) -> Shadow | None:
    """A vector shadow when ``full`` varies along one dimension only; None when it holds no id."""
    if full.numel() == 0:
        return None
    if int(full.max()) < 0:
        return None
    ndim = full.dim()
    if ndim == 0:
        return Shadow(full=full.reshape(()).clone())
    candidates = [d % ndim for d in prefer if -ndim <= d < ndim]
    candidates += [d for d in range(ndim) if d not in candidates]
    for d in candidates:
        rows = full.movedim(d, 0).reshape(full.shape[d], -1)
        lo = rows.amin(1)
        if bool((lo == rows.amax(1)).all()):
            return Shadow.vector(d, lo.numpy().copy())
    return Shadow(full=full.contiguous())
