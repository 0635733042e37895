"""The chapter 16 exercise checks pass the reference and fail plausible wrong answers."""

from torch.utils.data import DistributedSampler

from dlbook import exercises
from dlbook.exercises.ch16 import shard_indices, zero_bytes_per_device


def test_all_registered():
    assert exercises.known("ch16") == ["ch16.shard_indices", "ch16.zero_bytes_per_device"]


def test_references_pass():
    for key in exercises.known("ch16"):
        assert exercises.check(key, exercises.reference(key), verbose=False)


# --------------------------------------------------------------------------- shards


def test_shard_reference_is_distributed_sampler():
    for n, world in [(10, 4), (3, 8), (64, 2), (7, 3)]:
        for rank in range(world):
            assert shard_indices(n, rank, world) == list(
                DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False)
            )


def test_shard_by_sampler_passes():
    def by_sampler(n, rank, world_size):
        return list(DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=False))

    assert exercises.check("ch16.shard_indices", by_sampler, verbose=False)


def test_shard_contiguous_blocks_fail():
    def wrong(n, rank, world_size):  # contiguous blocks instead of every world_size-th index
        per = -(-n // world_size)
        padded = (list(range(n)) * (world_size + 1))[: per * world_size]
        return padded[rank * per : (rank + 1) * per]

    assert not exercises.check("ch16.shard_indices", wrong, verbose=False)


def test_shard_without_padding_fails():
    def wrong(n, rank, world_size):  # forgets the padding: ranks get different numbers of examples
        return list(range(n))[rank::world_size]

    result = exercises.check("ch16.shard_indices", wrong, verbose=False)
    assert not result and "padding" in result.failure


def test_shard_padding_once_fails_when_world_exceeds_n():
    def wrong(n, rank, world_size):  # pads with one copy only: too short when world_size > 2n
        total = -(-n // world_size) * world_size
        return (list(range(n)) * 2)[:total][rank::world_size]

    result = exercises.check("ch16.shard_indices", wrong, verbose=False)
    assert not result and "more ranks than examples" in result.failure


# --------------------------------------------------------------------------- ZeRO


def test_zero_reference_matches_the_paper():
    gb = [zero_bytes_per_device(7.5e9, 64, s) / 1e9 for s in range(4)]
    assert gb[0] == 120.0
    assert round(gb[1], 1) == 31.4 and round(gb[2], 1) == 16.6 and round(gb[3], 2) == 1.88


def test_zero_sharding_everything_from_stage_one_fails():
    def wrong(n_params, n_devices, stage):  # every stage shards everything
        return 16.0 * n_params / (n_devices if stage else 1)

    assert not exercises.check("ch16.zero_bytes_per_device", wrong, verbose=False)


def test_zero_fp32_count_fails():
    def wrong(n_params, n_devices, stage):  # 4 + 4 + 8 bytes: the fp32 count, not the mixed-precision one
        w, g, o = 4.0 * n_params, 4.0 * n_params, 8.0 * n_params
        if stage >= 1:
            o /= n_devices
        if stage >= 2:
            g /= n_devices
        if stage >= 3:
            w /= n_devices
        return w + g + o

    assert not exercises.check("ch16.zero_bytes_per_device", wrong, verbose=False)


def test_zero_stages_off_by_one_fail():
    def wrong(n_params, n_devices, stage):  # stage s shards s+1 parts
        w, g, o = 2.0 * n_params, 2.0 * n_params, 12.0 * n_params
        if stage >= 0:
            o /= n_devices
        if stage >= 1:
            g /= n_devices
        if stage >= 2:
            w /= n_devices
        return w + g + o

    assert not exercises.check("ch16.zero_bytes_per_device", wrong, verbose=False)
