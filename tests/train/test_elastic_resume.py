"""Resuming an epoch on another number of ranks or batch size: the rest of the epoch, each video once.

Ranks deal an epoch's permutation round-robin, so the videos they consumed are a prefix of it; the resumed
epoch deals what follows to the new ranks (``BatchStream.resume_elastic``), and a checkpoint written inside
such an epoch resumes it exactly on the same world, or elastically again on another.
"""

from __future__ import annotations

import itertools

import pytest

from videomask.train.parts import BatchStream, EpochKeys, ResumableSampler

N, SEED = 23, 5


def _keys(world: int, rank: int, batch: int, epoch: int = 0, consumed: int = 0, base: int | None = None):
    sampler = ResumableSampler(range(N), num_replicas=world, rank=rank, seed=SEED)
    return iter(EpochKeys(sampler, batch, epoch, consumed, base))


def _stream(world: int, rank: int, batch: int) -> BatchStream:
    sampler = ResumableSampler(range(N), num_replicas=world, rank=rank, seed=SEED)
    return BatchStream(range(N), sampler, {}, batch)


def _first_batches(world: int, batch: int, batches: int) -> list[int]:
    """The videos ``world`` ranks take in their first ``batches`` batches of epoch 0."""
    out = []
    for rank in range(world):
        keys = list(itertools.islice(_keys(world, rank, batch), batches * batch))
        assert {e for e, _ in keys} == {0}
        out += [i for _, i in keys]
    return out


def _elastic_rest(world: int, batch: int, done: int) -> tuple[list[int], list[BatchStream]]:
    """What ``world`` ranks take of the rest of epoch 0 after ``done`` videos, and their streams."""
    taken, streams = [], []
    for rank in range(world):
        stream = _stream(world, rank, batch)
        stream.resume_elastic(0, done)
        assert stream.epoch == 0 and stream.consumed == 0 and stream.elastic_base == done
        keys = _keys(world, rank, batch, stream.epoch, stream.consumed, stream.elastic_base)
        rest = list(itertools.islice(keys, stream.batches_per_epoch * batch))
        assert {e for e, _ in rest} == {0}
        assert next(keys)[0] == 1  # then the next epoch, in its usual order
        taken += [i for _, i in rest]
        streams.append(stream)
    return taken, streams


@pytest.mark.parametrize("old,new", [((2, 3), (1, 4)), ((2, 3), (3, 2)), ((1, 4), (2, 2)), ((3, 2), (2, 3))])
def test_resumed_epoch_takes_the_rest_of_the_epoch_once(old, new):
    (w0, b0), (w1, b1) = old, new
    before = _first_batches(w0, b0, batches=2)
    after, streams = _elastic_rest(w1, b1, done=2 * b0 * w0)
    assert len(set(before)) == len(before) and len(set(after)) == len(after)
    assert not set(before) & set(after)  # nothing seen twice in the epoch
    missing = set(range(N)) - set(before) - set(after)
    assert len(missing) < w1 * b1  # only a tail shorter than one batch per rank is left out
    assert len({s.batches_per_epoch for s in streams}) == 1  # every rank steps the same number of times


def test_what_ranks_consumed_is_a_prefix_of_the_permutation():
    """The fact the elastic resume rests on: after c batches each, the ranks have taken exactly the first
    c x batch x world videos of the epoch's permutation."""
    from videomask.train.parts import epoch_permutation

    sampler = ResumableSampler(range(N), num_replicas=2, rank=0, seed=SEED)
    for world, batch, c in [(2, 3, 1), (2, 3, 3), (3, 2, 2), (4, 1, 5)]:
        assert sorted(_first_batches(world, batch, c)) == sorted(epoch_permutation(sampler, 0)[: c * batch * world])


def test_an_elastic_epoch_resumes_exactly_on_the_same_world_and_again_on_another():
    done = 2 * 3 * 2  # 2 ranks x batch 3 took 2 batches each
    full, _ = _elastic_rest(3, 2, done)  # uninterrupted on 3 ranks x batch 2
    # killed after 1 batch per rank, resumed on the same 3 x 2 from (elastic_base, consumed=1)
    again = []
    for rank in range(3):
        keys = _keys(3, rank, 2, epoch=0, consumed=1, base=done)
        stream = _stream(3, rank, 2)
        stream.resume_elastic(0, done)
        again += [i for _, i in itertools.islice(keys, (stream.batches_per_epoch - 1) * 2)]
    first = []
    for rank in range(3):
        first += [i for _, i in itertools.islice(_keys(3, rank, 2, base=done), 2)]
    assert sorted(first + again) == sorted(full)
    # or resumed elastically once more, on 1 rank x batch 1, after base + 1 batch x 2 x 3 videos
    later, _ = _elastic_rest(1, 1, done + 1 * 2 * 3)
    assert not set(later) & set(first) and not set(later) & set(_first_batches(2, 3, 2))


def test_resume_past_the_end_of_the_epoch_starts_the_next():
    stream = _stream(2, 0, 4)
    stream.resume_elastic(3, N - 3)  # fewer than one batch per rank left
    assert (stream.epoch, stream.consumed, stream.elastic_base) == (4, 0, None)
    assert stream.batches_per_epoch == stream.sampler.num_samples // 4
