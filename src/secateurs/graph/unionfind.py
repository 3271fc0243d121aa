"""Union-find over integer ids: which channel slots must be removed together."""

from __future__ import annotations


class UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def new(self, count: int = 1) -> range:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        return range(start, start + count)

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if ra < rb:  # the smaller id stays root, so the blocked sentinel 0 always wins
            self.parent[rb] = ra
            return ra
        self.parent[ra] = rb
        return rb
