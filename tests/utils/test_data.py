"""Datasets, samplers and DataLoader: the batches, their order, and bad arguments."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minifuse as mf
from minifuse.utils.data import (BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, Subset,
                                 TensorDataset, default_collate, random_split)


def _dataset(n):
    return TensorDataset(mf.arange(n * 2, dtype=mf.float32).reshape(n, 2), mf.arange(n))


@settings(max_examples=15, deadline=None)
@given(n=st.integers(0, 11), batch_size=st.integers(1, 5), drop_last=st.booleans(), shuffle=st.booleans())
def test_batches_cover_the_dataset_once(n, batch_size, drop_last, shuffle):
    loader = DataLoader(_dataset(n), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, generator=0)
    batches = list(loader)
    assert len(batches) == len(loader) == (n // batch_size if drop_last else -(-n // batch_size))
    seen = [i for _, y in batches for i in y.tolist()]
    for x, y in batches:
        assert x.shape == (len(y), 2) and x.dtype == mf.float32 and y.dtype == mf.int64
        np.testing.assert_array_equal(x.numpy()[:, 0], 2 * y.numpy())
        assert len(y) == batch_size or not drop_last
    assert len(set(seen)) == len(seen)
    if drop_last:
        assert len(seen) == n // batch_size * batch_size
    else:
        assert sorted(seen) == list(range(n))
        assert shuffle or seen == list(range(n))


def test_shuffle_is_repeatable_with_a_seed_and_new_each_epoch():
    ds = _dataset(20)
    order = lambda loader: [i for _, y in loader for i in y.tolist()]  # noqa: E731
    a = DataLoader(ds, batch_size=4, shuffle=True, generator=7)
    b = DataLoader(ds, batch_size=4, shuffle=True, generator=7)
    first = order(a)
    assert first == order(b) and first != list(range(20))
    assert order(a) != first                       # a new permutation each epoch
    mf.manual_seed(3)
    c = order(DataLoader(ds, batch_size=4, shuffle=True))
    mf.manual_seed(3)
    assert c == order(DataLoader(ds, batch_size=4, shuffle=True, generator=None))
    g = np.random.default_rng(1)
    assert sorted(order(DataLoader(ds, batch_size=3, shuffle=True, generator=g))) == list(range(20))
    torch_style = [order(DataLoader(ds, batch_size=4, shuffle=True, generator=mf.Generator().manual_seed(7)))
                   for _ in range(2)]
    assert torch_style[0] == torch_style[1] == first


def test_any_sampler_plugs_in():
    class EveryOther:   # only __iter__ and __len__, like a distributed sampler
        def __init__(self, n):
            self.n = n

        def __iter__(self):
            return iter(range(0, self.n, 2))

        def __len__(self):
            return (self.n + 1) // 2

    loader = DataLoader(_dataset(7), batch_size=2, sampler=EveryOther(7))
    assert [y.tolist() for _, y in loader] == [[0, 2], [4, 6]] and len(loader) == 2
    batches = DataLoader(_dataset(5), batch_sampler=[[4, 0], [1]])
    assert [y.tolist() for _, y in batches] == [[4, 0], [1]]


def test_samplers():
    assert list(SequentialSampler(range(3))) == [0, 1, 2]
    r = RandomSampler(range(6), generator=0)
    assert sorted(r) == list(range(6)) and len(r) == 6
    w = RandomSampler(range(3), replacement=True, num_samples=10, generator=0)
    assert len(list(w)) == 10 == len(w) and set(w) <= {0, 1, 2}
    assert list(BatchSampler(range(5), 2, drop_last=False)) == [[0, 1], [2, 3], [4]]
    assert list(BatchSampler(range(5), 2, drop_last=True)) == [[0, 1], [2, 3]]


def test_collate_and_custom_datasets():
    class Squares(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"x": np.full(3, i, dtype=np.float32), "y": i * i, "w": 0.5, "name": f"s{i}"}

    (batch,) = DataLoader(Squares(), batch_size=4)
    assert batch["x"].shape == (4, 3) and batch["x"].dtype == mf.float32
    assert batch["y"].tolist() == [0, 1, 4, 9] and batch["y"].dtype == mf.int64
    assert batch["w"].dtype == mf.float64 and batch["name"] == ["s0", "s1", "s2", "s3"]
    x = mf.randn(2, requires_grad=True)
    stacked = default_collate([x, x * 2])
    stacked.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])
    (pair,) = DataLoader(_dataset(3), batch_size=3, collate_fn=lambda samples: len(samples))
    assert pair == 3


def test_subset_and_random_split():
    ds = _dataset(10)
    a, b = random_split(ds, [7, 3], generator=0)
    assert len(a) == 7 and len(b) == 3
    ids = sorted(int(a[i][1].item()) for i in range(7)) + sorted(int(b[i][1].item()) for i in range(3))
    assert sorted(ids) == list(range(10))
    c, d = random_split(ds, [0.75, 0.25], generator=0)
    assert (len(c), len(d)) == (8, 2)
    assert int(Subset(ds, [5, 2])[1][1].item()) == 2
    with pytest.raises(ValueError, match="sum to len"):
        random_split(ds, [3, 3])


def test_bad_arguments_are_named():
    ds = _dataset(4)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        DataLoader(ds, batch_size=0)
    with pytest.raises(ValueError, match="sampler and shuffle"):
        DataLoader(ds, sampler=SequentialSampler(ds), shuffle=True)
    with pytest.raises(ValueError, match="batch_sampler is mutually exclusive"):
        DataLoader(ds, batch_size=2, batch_sampler=[[0]])
    with pytest.raises(ValueError, match="num_workers"):
        DataLoader(ds, num_workers=2)
    with pytest.raises(TypeError, match="generator"):
        DataLoader(ds, shuffle=True, generator="seed")
    with pytest.raises(ValueError, match=r"tensors\[1\] \(3,\)"):
        TensorDataset(mf.zeros(4, 2), mf.zeros(3))
    with pytest.raises(TypeError, match=r"tensors\[0\] must be a Tensor"):
        TensorDataset(np.zeros(3))
    with pytest.raises(ValueError, match="num_samples needs replacement"):
        RandomSampler(ds, num_samples=3)
