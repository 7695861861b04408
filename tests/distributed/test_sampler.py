"""DistributedSampler: shards, padding, drop_last and shuffling, in one process (no launcher)."""
import math

import pytest
from hypothesis import given, strategies as st

from minifuse.utils.data import DistributedSampler


def shards(n, replicas, **kw):
    return [list(DistributedSampler(range(n), replicas, r, **kw)) for r in range(replicas)]


@given(n=st.integers(0, 40), replicas=st.integers(1, 5), shuffle=st.booleans(), drop_last=st.booleans())
def test_shards_are_equal_length_and_cover_the_dataset(n, replicas, shuffle, drop_last):
    parts = shards(n, replicas, shuffle=shuffle, drop_last=drop_last)
    sizes = {len(p) for p in parts}
    assert len(sizes) == 1
    size = sizes.pop()
    assert size == (n // replicas if drop_last else math.ceil(n / replicas))
    assert len(DistributedSampler(range(n), replicas, 0, drop_last=drop_last)) == size
    flat = [i for p in parts for i in p]
    assert all(0 <= i < n for i in flat)
    if drop_last:
        assert len(set(flat)) == len(flat)              # nothing twice
    else:
        assert set(flat) == set(range(n))               # every sample, padding repeats some


def test_padding_and_order_follow_pytorch():
    assert shards(5, 2, shuffle=False) == [[0, 2, 4], [1, 3, 0]]
    assert shards(5, 2, shuffle=False, drop_last=True) == [[0, 2], [1, 3]]
    assert shards(2, 4, shuffle=False) == [[0], [1], [0], [1]]


def test_set_epoch_reshuffles_the_same_on_every_rank():
    a = DistributedSampler(range(20), 2, 0, seed=3)
    b = DistributedSampler(range(20), 2, 1, seed=3)
    first = list(a) + list(b)
    a.set_epoch(1)
    b.set_epoch(1)
    second = list(a) + list(b)
    assert sorted(first) == sorted(second) == list(range(20))
    assert first != second
    a.set_epoch(0)
    assert list(a) == first[:10]


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="rank must be in 0..1"):
        DistributedSampler(range(4), 2, 2)
    with pytest.raises(ValueError, match="num_replicas must be an integer >= 1"):
        DistributedSampler(range(4), 0, 0)
    with pytest.raises(TypeError, match="'dataset' must have a length"):
        DistributedSampler(iter(range(4)), 2, 0)
    with pytest.raises(ValueError, match="epoch"):
        DistributedSampler(range(4), 2, 0).set_epoch(-1)
    with pytest.raises(RuntimeError, match="not initialised"):
        DistributedSampler(range(4))

