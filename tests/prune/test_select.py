"""The equal-per-block channel choice: the direct answer where each channel sits in one
block is the integer program's optimum."""

import numpy as np
import pytest

from secateurs.prune.select import _balanced, lowest


@pytest.mark.parametrize("seed", range(5))
def test_one_block_per_channel_matches_the_integer_program(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        blocks, per = int(rng.integers(2, 6)), int(rng.integers(1, 6))
        n = blocks * per
        counts = np.zeros((n, blocks), np.int64)
        counts[rng.permutation(n), np.repeat(np.arange(blocks), per)] = 1
        scores = rng.random(n)
        axis_counts, sizes = np.ones((n, 1), np.int64), np.array([n])
        if rng.random() < 0.5:  # a second member holding some of the channels only
            extra = (rng.random(n) < 0.5).astype(np.int64)
            axis_counts = np.c_[axis_counts, extra]
            sizes = np.r_[sizes, max(1, int(extra.sum()))]
        count = int(rng.integers(1, n + 1))
        direct = lowest(scores, count, [counts], axis_counts, sizes)
        program = _balanced(scores, count, [counts], axis_counts, sizes)
        assert len(direct) == len(program) and len(direct) % blocks == 0
        assert scores[direct].sum() == pytest.approx(scores[program].sum(), abs=1e-9)
        per_block = counts[direct].sum(0)
        assert (per_block == per_block[0]).all()
