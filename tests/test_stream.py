"""The resumable training stream on its own: batches are a pure function of (seed,
batch number), so a stream started at batch k is the tail of a stream started at 0,
with the same images and the same augmentation draws; the paired loader steps source
and target together. (The bit-exact resume of a whole run is in test_resume.py.)"""
import itertools
import random

import numpy as np
import pytest
import torch

import mic_det.data.stream as stream
from mic_det.data.stream import PairedDataLoader, ResumableTrainLoader, batch_index_stream, seeded_rng


def record_draws(d):
    """A mapper that shows which image it got and what each generator gave it."""
    return {"idx": d["idx"], "py": random.random(), "np": float(np.random.rand()), "torch": float(torch.rand(()))}


def dicts(n, wide=None):
    out = []
    for i in range(n):
        d = {"idx": i}
        if wide is not None:
            d.update(width=200 if wide(i) else 100, height=100 if wide(i) else 200)
        out.append(d)
    return out


def loader(n=7, batch=3, seed=5, **kwargs):
    kwargs.setdefault("aspect_ratio_grouping", False)
    kwargs.setdefault("num_workers", 0)
    return ResumableTrainLoader(dicts(n), record_draws, total_batch_size=batch, seed=seed, **kwargs)


def take(ld, k):
    return list(itertools.islice(iter(ld), k))


def test_same_seed_same_batches_other_seed_other_batches():
    a, b, c = take(loader(), 6), take(loader(), 6), take(loader(seed=6), 6)
    assert a == b
    assert [x["idx"] for batch in a for x in batch] != [x["idx"] for batch in c for x in batch]
    assert all(len(batch) == 3 for batch in a)
    # every image of the dataset comes round: the sampler shuffles without loss
    assert {x["idx"] for batch in a[:3] for x in batch} == set(range(7))


def test_one_image_per_step_is_a_valid_batch():
    batches = take(loader(batch=1), 3)
    assert [len(b) for b in batches] == [1, 1, 1]


def test_a_stream_started_at_k_is_the_tail_of_the_full_stream():
    full = take(loader(), 8)
    for k in (1, 3, 5):
        ld = loader()
        ld.set_start(k)
        assert take(ld, 8 - k) == full[k:], f"start {k}"


def test_augmentation_draws_differ_per_image_and_per_batch():
    batches = take(loader(), 4)
    draws = [x["torch"] for batch in batches for x in batch]
    assert len(set(draws)) == len(draws)
    # and repeat for the same image at another point of the stream is not the same draw
    first = {}
    for n, batch in enumerate(batches):
        for x in batch:
            if x["idx"] in first:
                assert x["py"] != first[x["idx"]]["py"]
            first.setdefault(x["idx"], x)


def test_worker_processes_keep_the_order_and_the_draws():
    assert take(loader(num_workers=2), 5) == take(loader(num_workers=0), 5)
    ld = loader(num_workers=2)
    ld.set_start(2)
    assert take(ld, 3) == take(loader(), 5)[2:]
    # three workers resumed at a start that is not a multiple of three: worker w must
    # serve the batches start + w, start + w + 3, ... for the loader to take them in order
    ld = loader(num_workers=3)
    ld.set_start(4)
    assert take(ld, 5) == take(loader(), 9)[4:]


def test_ranks_draw_differently(monkeypatch):
    a = take(loader(), 2)
    monkeypatch.setattr(stream.comm, "get_rank", lambda: 1)
    b = take(loader(), 2)
    assert [x["torch"] for x in a[0]] != [x["torch"] for x in b[0]]


def test_batch_size_must_divide_among_processes(monkeypatch):
    monkeypatch.setattr(stream.comm, "get_world_size", lambda: 2)
    with pytest.raises(ValueError, match=r"\(3\).*\(2\)"):
        loader(batch=3)
    assert loader(batch=4).batch_size == 2
    with pytest.raises(ValueError):
        loader(batch=0)


def test_aspect_ratio_grouping_makes_homogeneous_batches():
    wide = lambda i: i % 3 == 0  # noqa: E731
    ld = ResumableTrainLoader(
        dicts(12, wide), record_draws, total_batch_size=2, aspect_ratio_grouping=True, num_workers=0, seed=1
    )
    assert ld.aspect_groups == [int(wide(i)) for i in range(12)]
    batches = take(ld, 12)
    assert any(wide(b[0]["idx"]) for b in batches) and any(not wide(b[0]["idx"]) for b in batches)
    for b in batches:
        assert len({wide(x["idx"]) for x in b}) == 1, b


def test_batch_index_stream_keeps_sampler_order():
    assert list(itertools.islice(batch_index_stream(iter(range(100)), None, 3), 3)) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    groups = [0, 1, 1, 0, 0, 1, 0]
    assert list(itertools.islice(batch_index_stream(iter(range(7)), groups, 2), 3)) == [[1, 2], [0, 3], [4, 6]]


def test_repeat_factors_oversample():
    ld = loader(n=4, batch=4, repeat_factors=torch.tensor([1.0, 1.0, 1.0, 4.0]))
    idx = [x["idx"] for batch in take(ld, 10) for x in batch]
    assert idx.count(3) > 2 * idx.count(0)


def test_pin_memory_reaches_the_data_loader(monkeypatch):
    seen = {}
    real = stream.DataLoader

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **{**kwargs, "pin_memory": False})  # no GPU here

    monkeypatch.setattr(stream, "DataLoader", spy)
    take(loader(pin_memory=True), 1)
    assert seen["pin_memory"] is True and seen["num_workers"] == 0


def test_seeded_rng_restores_the_global_generators():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    with seeded_rng(123):
        inside = (random.random(), float(np.random.rand()), float(torch.rand(())))
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected
    with seeded_rng(123):
        assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == inside
    with seeded_rng(124):
        assert random.random() != inside[0]


def test_paired_loader_steps_both_streams_and_starts_both():
    source, target = loader(seed=1), loader(seed=2, batch=2)
    pairs = take(PairedDataLoader(source, target), 4)
    assert [s for s, _ in pairs] == take(loader(seed=1), 4)
    assert [t for _, t in pairs] == take(loader(seed=2, batch=2), 4)
    paired = PairedDataLoader(loader(seed=1), loader(seed=2, batch=2))
    paired.set_start(2)
    assert take(paired, 2) == pairs[2:]


def test_the_stream_starts_at_the_samplers_first_batch():
    from detectron2.data.samplers import TrainingSampler

    first = [x["idx"] for x in take(loader(n=7, batch=3, seed=5), 1)[0]]
    assert first == list(itertools.islice(iter(TrainingSampler(7, seed=5)), 3))


def test_augmentation_draws_depend_on_the_stream_seed():
    a, b = take(loader(seed=5), 1)[0], take(loader(seed=6), 1)[0]
    assert [x["torch"] for x in a] != [x["torch"] for x in b]


def test_images_without_sizes_or_square_go_with_the_tall_ones():
    ds = [{"idx": 0, "width": 10, "height": 10}, {"idx": 1}, {"idx": 2, "width": 20, "height": 10},
          {"idx": 3, "height": 5}]
    ld = ResumableTrainLoader(ds, record_draws, total_batch_size=2, aspect_ratio_grouping=True, num_workers=0, seed=0)
    assert ld.aspect_groups == [0, 0, 1, 0]  # as detectron2 groups them: width > height
    assert ResumableTrainLoader(ds, record_draws, total_batch_size=2, aspect_ratio_grouping=False,
                                num_workers=0, seed=0).aspect_groups is None


def test_repeat_factor_streams_are_reproducible():
    factors = torch.tensor([1.0, 1.0, 1.0, 4.0])
    assert take(loader(n=4, batch=4, repeat_factors=factors), 5) == take(loader(n=4, batch=4, repeat_factors=factors), 5)
    assert take(loader(n=4, batch=4, repeat_factors=factors), 5) != take(loader(n=4, batch=4, seed=6, repeat_factors=factors), 5)


def test_starting_a_stream_leaves_the_global_generator_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    iter(loader())
    assert torch.equal(torch.rand(3), expected)
