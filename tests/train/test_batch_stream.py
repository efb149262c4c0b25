"""The training stream: one loader iterator across epochs, in the per-epoch order a resumed run expects."""

from __future__ import annotations

import itertools

from videomask.train.parts import BatchStream, EpochKeys, ResumableSampler


class Keys:
    """A stand-in dataset that returns its key, so the batches show the order."""

    def __len__(self) -> int:
        return 7

    def __getitem__(self, key):
        return key


def _epoch_order(epoch: int, batch_size: int) -> list[tuple[int, int]]:
    sampler = ResumableSampler(Keys(), num_replicas=1, rank=0, seed=3)
    sampler.set_epoch(epoch)
    order = list(sampler)
    return [(epoch, i) for i in order[: len(order) // batch_size * batch_size]]


def test_epoch_keys_follow_each_epochs_shuffle_cut_to_whole_batches_from_a_mid_epoch_start() -> None:
    sampler = ResumableSampler(Keys(), num_replicas=1, rank=0, seed=3)
    keys = list(itertools.islice(EpochKeys(sampler, batch_size=3, epoch=2, consumed=1), 3 + 6 + 6))
    expected = _epoch_order(2, 3)[3:] + _epoch_order(3, 3) + _epoch_order(4, 3)
    assert keys == expected
    assert _epoch_order(3, 3) != _epoch_order(4, 3)  # a new shuffle every epoch


def test_the_stream_keeps_one_iterator_across_epochs_and_counts_its_position() -> None:
    sampler = ResumableSampler(Keys(), num_replicas=1, rank=0, seed=3)
    stream = BatchStream(Keys(), sampler, {"collate_fn": list, "num_workers": 0}, batch_size=3)
    assert stream.batches_per_epoch == 2
    batches, positions = [], []
    for _ in range(5):
        batches.append(stream.next())
        positions.append((stream.epoch, stream.consumed))
        if len(batches) == 1:
            iterator = stream._it
    assert stream._it is iterator  # one iterator: the workers prefetch across epoch boundaries
    assert positions == [(0, 1), (0, 2), (1, 1), (1, 2), (2, 1)]
    flat = [key for batch in batches for key in batch]
    assert flat == (_epoch_order(0, 3) + _epoch_order(1, 3) + _epoch_order(2, 3))[:15]
