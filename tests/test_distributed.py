"""dlbook.distributed (chapter 16): splitting, averaging, memory counts, and a real 2-process gloo run."""

import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.data import DistributedSampler

from dlbook import distributed as dp

# --------------------------------------------------------------------------- memory


def test_training_memory_counts_adamw_state():
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Linear(5, 3))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 7)).sum().backward()
    opt.step()
    n = sum(p.numel() for p in model.parameters())
    mem = dp.training_memory(n, "adamw", "fp32")
    state = sum(v.numel() * v.element_size() for s in opt.state.values() for k, v in s.items() if k != "step")
    assert mem["weights"] == sum(p.numel() * 4 for p in model.parameters())
    assert mem["gradients"] == sum(p.grad.numel() * 4 for p in model.parameters())
    assert mem["optimizer"] == state
    assert mem["total"] == 16 * n


def test_training_bytes_mixed_and_sgd():
    assert sum(dp.training_bytes_per_parameter("adam", "mixed").values()) == 16
    assert dp.training_bytes_per_parameter("sgd", "fp32") == {"weights": 4, "gradients": 4, "optimizer": 0}
    with pytest.raises(ValueError, match="unknown optimizer"):
        dp.training_bytes_per_parameter("lion")
    with pytest.raises(ValueError):
        dp.training_memory(0)


# --------------------------------------------------------------------------- splitting


@pytest.mark.parametrize("n,world", [(10, 2), (10, 4), (3, 8), (1, 1), (17, 5)])
def test_shard_indices_is_distributed_sampler(n, world):
    for rank in range(world):
        assert dp.shard_indices(n, rank, world) == list(
            DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False)
        )


def test_shard_indices_rejects_bad_rank():
    with pytest.raises(ValueError, match="rank"):
        dp.shard_indices(10, 2, 2)
    with pytest.raises(TypeError):
        dp.shard_indices(10.0, 0, 2)


def test_split_batch_dict_and_errors():
    batch = {"x": torch.arange(12).reshape(6, 2), "y": torch.arange(6)}
    pieces = dp.split_batch(batch, 3)
    assert [p["y"].tolist() for p in pieces] == [[0, 1], [2, 3], [4, 5]]
    assert torch.equal(torch.cat([p["x"] for p in pieces]), batch["x"])
    with pytest.raises(ValueError, match="equal pieces"):
        dp.split_batch(torch.zeros(5, 2), 2)
    with pytest.raises(ValueError, match="same first dimension"):
        dp.split_batch({"x": torch.zeros(4), "y": torch.zeros(2)}, 2)
    with pytest.raises(TypeError):
        dp.split_batch([1, 2], 2)


# --------------------------------------------------------------------------- averaging


def _toy():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    batch = {"x": torch.randn(8, 6), "y": torch.randint(0, 3, (8,))}
    return model, batch


def _loss(model, batch):
    return torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"])


@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_simulate_data_parallel_equals_whole_batch(world):
    model, batch = _toy()
    _loss(model, batch).backward()
    whole = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    got = dp.simulate_data_parallel(model, _loss, batch, world)
    for a, b in zip(got, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())  # the model is left alone


def test_summing_instead_of_averaging_is_wrong():
    model, batch = _toy()
    _loss(model, batch).backward()
    whole = [p.grad.clone() for p in model.parameters()]
    per_rank = []
    for piece in dp.split_batch(batch, 2):
        m = __import__("copy").deepcopy(model)
        m.zero_grad()
        _loss(m, piece).backward()
        per_rank.append([p.grad.clone() for p in m.parameters()])
    summed = [a + b for a, b in zip(*per_rank, strict=True)]
    assert not torch.allclose(summed[0], whole[0])
    torch.testing.assert_close(dp.average_gradients(per_rank)[0], whole[0])


def test_average_gradients_checks_shapes():
    with pytest.raises(ValueError, match="shape"):
        dp.average_gradients([[torch.zeros(2)], [torch.zeros(3)]])
    with pytest.raises(ValueError):
        dp.average_gradients([])


def test_all_reduce_gradients_needs_a_group():
    model, _ = _toy()
    with pytest.raises(RuntimeError, match="init_process_group"):
        dp.all_reduce_gradients(model)


# --------------------------------------------------------------------------- launching


def test_launch_command_and_env():
    cmd = dp.launch_command("s.py", 2, ["a"], launcher="torchrun", port=1234)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--master-addr" in cmd and "127.0.0.1" in cmd
    assert cmd[-2:] == ["s.py", "a"]
    acc = dp.launch_command("s.py", 2, launcher="accelerate", port=1234)
    assert "accelerate.commands.launch" in acc and acc[acc.index("--num_processes") + 1] == "2"
    with pytest.raises(ValueError):
        dp.launch_command("s.py", 2, launcher="python")
    with pytest.raises(ValueError):
        dp.launch_command("s.py", 2, launcher="mpirun")
    env = dp.loopback_env(1234, 1, base={"HF_HUB_OFFLINE": "1"})
    assert env["MASTER_ADDR"] == "127.0.0.1" and env["MASTER_PORT"] == "1234" and env["HF_HUB_OFFLINE"] == "1"
    assert env["OMP_NUM_THREADS"] == "1"
    assert 0 < dp.free_port() < 65536


def test_pick_backend_on_this_machine():
    backend, dev = dp.pick_backend(2)
    if torch.cuda.is_available() and torch.cuda.device_count() >= 2:
        assert (backend, dev) == ("nccl", "cuda")
    else:
        assert (backend, dev) == ("gloo", "cpu")


def test_launch_failure_shows_child_stderr(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text("import sys\nprint('child says hello')\nraise SystemExit('boom from the child')\n")
    with pytest.raises(dp.LaunchError, match="boom from the child"):
        dp.launch(script, nproc=1, launcher="python", timeout=60)
    with pytest.raises(FileNotFoundError):
        dp.launch(tmp_path / "missing.py", nproc=1, launcher="python")


def test_real_two_process_gloo_all_reduce(tmp_path):
    """Two real processes (gloo, loopback): the averaged gradient equals the whole-batch gradient."""
    script = tmp_path / "two.py"
    script.write_text(
        textwrap.dedent("""
        import sys
        import torch
        import torch.distributed as dist
        from dlbook.distributed import all_reduce_gradients, split_batch

        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        batch = {"x": torch.randn(8, 6), "y": torch.randint(0, 3, (8,))}
        piece = split_batch(batch, world)[rank]
        torch.nn.functional.cross_entropy(model(piece["x"]), piece["y"]).backward()
        all_reduce_gradients(model)
        if rank == 0:
            torch.save([p.grad for p in model.parameters()], sys.argv[1])
        print(f"rank {rank} of {world} done", flush=True)
        dist.destroy_process_group()
    """)
    )
    out = tmp_path / "grads.pt"
    done = dp.launch(script, nproc=2, args=[out], timeout=120)
    assert "rank 0 of 2 done" in done.stdout and "rank 1 of 2 done" in done.stdout
    model, batch = _toy()
    torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"]).backward()
    for a, b in zip(torch.load(out), model.parameters(), strict=True):
        torch.testing.assert_close(a, b.grad, rtol=1e-5, atol=1e-7)


def test_launch_rendezvous_is_loopback_only(tmp_path):
    """The children see MASTER_ADDR=127.0.0.1 and inherit the caller's environment."""
    script = tmp_path / "env.py"
    script.write_text("import os\nprint(os.environ['MASTER_ADDR'], os.environ.get('DLBOOK_CH16_MARK'))\n")
    import os

    done = dp.launch(script, nproc=1, launcher="python", env={**os.environ, "DLBOOK_CH16_MARK": "inherited"})
    assert done.stdout.split() == ["127.0.0.1", "inherited"]
    assert isinstance(done, subprocess.CompletedProcess)


def test_gpipe_schedule_idle_share_matches_the_formula():
    for p, m in [(1, 1), (1, 5), (2, 1), (2, 4), (3, 7), (4, 16)]:
        grid = dp.gpipe_schedule(p, m)
        assert len(grid) == p and all(len(row) == 2 * (m + p - 1) for row in grid)
        for row in grid:  # every stage runs every micro-batch forward and backward once
            assert sorted(c for c in row if c) == sorted([f"F{j}" for j in range(m)] + [f"B{j}" for j in range(m)])
        idle = sum(c == "" for row in grid for c in row) / (p * len(grid[0]))
        assert idle == pytest.approx(dp.gpipe_bubble_fraction(p, m))
    assert dp.gpipe_bubble_fraction(4, 8) == pytest.approx(3 / 11)
    with pytest.raises(ValueError, match="n_micro"):
        dp.gpipe_schedule(2, 0)
    with pytest.raises(ValueError, match="n_stages"):
        dp.gpipe_bubble_fraction(True, 3)


def test_counting_hooks_log_every_all_reduce(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        for hook, wire, size in [(dp.counting_allreduce_hook, "float32", 4), (dp.counting_bf16_compress_hook, "bfloat16", 2)]:
            model = DDP(torch.nn.Linear(3, 2))
            log = []
            model.register_comm_hook(log, hook)
            for _ in range(2):
                model(torch.randn(4, 3)).sum().backward()
            with model.no_sync():
                model(torch.randn(4, 3)).sum().backward()
            assert len(log) == 2  # no_sync: no all-reduce
            assert log[0]["numel"] == 8 and log[0]["wire_dtype"] == wire and log[0]["bytes"] == 8 * size
        with pytest.raises(TypeError, match="list"):
            model = DDP(torch.nn.Linear(3, 2))
            model.register_comm_hook({}, dp.counting_allreduce_hook)
            model(torch.randn(4, 3)).sum().backward()
    finally:
        dist.destroy_process_group()
