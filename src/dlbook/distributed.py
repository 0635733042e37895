"""Data parallelism on one machine: launching processes, splitting batches, averaging gradients.

Taught in chapter 16, "Scaling out with data parallelism". The pieces, in the order the chapter
uses them:

- :func:`training_bytes_per_parameter` / :func:`training_memory`: what weights, gradients and
  Adam's two moments cost per parameter, and in total for a model size;
- :func:`split_batch`, :func:`shard_indices`: how a batch, or a data set, is cut among ranks
  (the second gives exactly the indices of ``DistributedSampler(shuffle=False)``);
- :func:`average_gradients` / :func:`simulate_data_parallel`: the all-reduce (mean) of
  gradients, simulated in one process, which must equal the gradient of the whole batch;
- :func:`all_reduce_gradients`: the same average, for real, across ``torch.distributed``
  processes (what ``DistributedDataParallel`` does for us, bucket by bucket, during backward);
- :func:`pick_backend`, :func:`free_port`, :func:`loopback_env`, :func:`launch`: start a script
  in ``nproc`` processes with ``torchrun`` or ``accelerate launch``, with the rendezvous on
  loopback only, and fail loudly, with the children's output, when a child fails;
- :func:`counting_allreduce_hook`, :func:`counting_bf16_compress_hook`: DDP communication hooks
  that log every all-reduce (how many, how many bytes, in which dtype), so that the chapter can
  show that ``no_sync`` skips the all-reduce of gradient-accumulation steps;
- :func:`gpipe_schedule`, :func:`gpipe_bubble_fraction`: the GPipe pipeline schedule, simulated
  from its dependencies, and its idle share (p - 1) / (m + p - 1).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

# ---------------------------------------------------------------------------------------------
# memory


def training_bytes_per_parameter(optimizer: str = "adam", precision: str = "fp32") -> dict[str, int]:
    """Bytes per parameter that training keeps in memory, besides the activations.

    ``precision="fp32"``: 4 for the weight, 4 for its gradient, and for Adam(W) 8 for its two
    moment estimates (16 in all; SGD with momentum keeps 4, plain SGD nothing).
    ``precision="mixed"``: the mixed-precision recipe Rajbhandari et al. (2020) count for ZeRO:
    fp16/bf16 weight (2) and gradient (2), and in the optimizer an fp32 master copy of the weight
    plus Adam's two fp32 moments (12): 16 bytes again. Chapter 16.
    """
    states = {"adam": 2, "adamw": 2, "sgd_momentum": 1, "sgd": 0}
    if optimizer not in states:
        raise ValueError(f"unknown optimizer {optimizer!r}; known: {sorted(states)}")
    if precision == "fp32":
        return {"weights": 4, "gradients": 4, "optimizer": 4 * states[optimizer]}
    if precision == "mixed":
        return {"weights": 2, "gradients": 2, "optimizer": 4 + 4 * states[optimizer]}
    raise ValueError(f"precision must be 'fp32' or 'mixed', got {precision!r}")


def training_memory(n_params: int, optimizer: str = "adam", precision: str = "fp32") -> dict[str, float]:
    """Bytes of weights, gradients and optimizer state for a model of ``n_params`` parameters (no activations)."""
    if isinstance(n_params, bool) or not isinstance(n_params, int) or n_params < 1:
        raise ValueError(f"n_params must be a positive int, got {n_params!r}")
    per = training_bytes_per_parameter(optimizer, precision)
    out = {k: float(v * n_params) for k, v in per.items()}
    out["total"] = sum(out.values())
    return out


# ---------------------------------------------------------------------------------------------
# splitting the work


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """The indices of a data set of ``n`` examples that rank ``rank`` of ``world_size`` reads.

    Exactly ``torch.utils.data.DistributedSampler(..., shuffle=False, drop_last=False)``: the
    list ``0..n-1`` is padded by repeating its start until its length divides by
    ``world_size``, then rank ``r`` takes every ``world_size``-th index starting at ``r``. Every
    rank gets the same number of examples, so every rank runs the same number of steps.
    """
    for name, v in (("n", n), ("world_size", world_size), ("rank", rank)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {v!r}")
    if n < 1 or world_size < 1:
        raise ValueError(f"n and world_size must be >= 1, got n={n}, world_size={world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    total = -(-n // world_size) * world_size  # rounded up to a multiple of world_size
    idx = list(range(n))
    while len(idx) < total:
        idx += idx[: total - len(idx)]
    return idx[rank:total:world_size]


def split_batch(batch: torch.Tensor | Mapping[str, torch.Tensor], world_size: int) -> list[Any]:
    """Cut a batch (a tensor, or a dict of tensors with the same first dimension) into
    ``world_size`` equal, contiguous pieces, one per rank.

    Equal pieces matter: data parallelism averages the ranks' mean losses with equal weights,
    which is the mean over the whole batch only when every rank holds the same number of examples.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if isinstance(batch, torch.Tensor):
        if batch.dim() == 0:
            raise ValueError("cannot split a 0-d tensor into a batch")
        if batch.shape[0] % world_size:
            raise ValueError(f"batch of {batch.shape[0]} does not split into {world_size} equal pieces")
        return list(batch.chunk(world_size))
    if isinstance(batch, Mapping):
        sizes = {k: v.shape[0] for k, v in batch.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"all tensors of a batch need the same first dimension, got {sizes}")
        pieces = {k: split_batch(v, world_size) for k, v in batch.items()}
        return [{k: pieces[k][r] for k in batch} for r in range(world_size)]
    raise TypeError(f"batch must be a tensor or a dict of tensors, got {type(batch).__name__}")


# ---------------------------------------------------------------------------------------------
# averaging gradients


def average_gradients(grads_per_rank: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """The all-reduce with ``op=AVG`` simulated in one process.

    ``grads_per_rank[r][i]`` is rank ``r``'s gradient of parameter ``i``; the result's entry
    ``i`` is the mean over ranks, the tensor every rank holds after the all-reduce.
    """
    if len(grads_per_rank) == 0:
        raise ValueError("need the gradients of at least one rank")
    n = len(grads_per_rank[0])
    for r, grads in enumerate(grads_per_rank):
        if len(grads) != n:
            raise ValueError(f"rank {r} has {len(grads)} gradients, rank 0 has {n}")
        for i, (g, g0) in enumerate(zip(grads, grads_per_rank[0], strict=True)):
            if g.shape != g0.shape:
                raise ValueError(f"gradient {i} has shape {tuple(g.shape)} on rank {r} and {tuple(g0.shape)} on rank 0")
    return [torch.stack([grads[i] for grads in grads_per_rank]).mean(0) for i in range(n)]


def simulate_data_parallel(
    model: nn.Module, loss_fn: Callable[[nn.Module, Any], torch.Tensor], batch: Any, world_size: int
) -> list[torch.Tensor]:
    """Gradients of data-parallel training, simulated in one process.

    ``world_size`` replicas of ``model`` (the same weights) each compute ``loss_fn(replica,
    piece)`` on their piece of ``batch`` (:func:`split_batch`) and back-propagate; the gradients
    are then averaged (:func:`average_gradients`). Returns one tensor per parameter, in the order
    of ``model.parameters()``; ``model`` itself is left untouched. For a loss that is a mean over
    the examples, the result equals the gradient of ``loss_fn(model, batch)``. Chapter 16.
    """
    import copy

    pieces = split_batch(batch, world_size)
    grads_per_rank = []
    for piece in pieces:
        replica = copy.deepcopy(model)
        replica.zero_grad(set_to_none=True)
        loss_fn(replica, piece).backward()
        grads_per_rank.append(
            [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in replica.parameters()]
        )
    return average_gradients(grads_per_rank)


def all_reduce_gradients(model: nn.Module, group: Any = None) -> None:
    """Average every parameter's ``.grad`` across the processes of ``group``, in place.

    The hand-written version of what ``DistributedDataParallel`` does during backward (which
    groups the gradients in buckets and overlaps the communication with the computation). Needs
    ``torch.distributed`` to be initialised. Chapter 16.
    """
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: call dist.init_process_group first")
    world = dist.get_world_size(group)
    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM, group=group)
        p.grad /= world


# ---------------------------------------------------------------------------------------------
# launching


def pick_backend(nproc: int = 2) -> tuple[str, str]:
    """``(backend, device_type)`` for ``nproc`` processes on this machine.

    NCCL on CUDA when there are at least ``nproc`` GPUs (one per process); otherwise gloo on the
    CPU, also on a machine with a single GPU (two processes sharing one GPU would measure nothing
    useful).
    """
    if torch.cuda.is_available() and torch.cuda.device_count() >= nproc:
        return "nccl", "cuda"
    return "gloo", "cpu"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now (the OS picks it): the rendezvous (chapter 16), the demo (chapter 11)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def loopback_env(port: int, threads_per_process: int | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for child processes that meet on loopback only.

    A copy of ``base`` (default ``os.environ``: the children inherit ``HF_HUB_OFFLINE``,
    ``DLBOOK_PROFILE``, ``PYTHONPATH`` and the rest) with ``MASTER_ADDR=127.0.0.1``,
    ``MASTER_PORT=port``, gloo's network interface set to loopback (``lo`` on Linux, ``lo0`` on
    macOS) and, if given, ``OMP_NUM_THREADS=threads_per_process``.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be an int in 1..65535, got {port!r}")
    env = dict(os.environ if base is None else base)
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    env["GLOO_SOCKET_IFNAME"] = "lo0" if sys.platform == "darwin" else "lo"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads_per_process is not None:
        if not isinstance(threads_per_process, int) or threads_per_process < 1:
            raise ValueError(f"threads_per_process must be a positive int, got {threads_per_process!r}")
        env["OMP_NUM_THREADS"] = str(threads_per_process)
    return env


LAUNCHERS = ("torchrun", "accelerate", "python")


def launch_command(
    script: str | os.PathLike[str], nproc: int, args: Sequence[str] = (), *, launcher: str = "torchrun", port: int = 29500
) -> list[str]:
    """The command line that starts ``script`` in ``nproc`` processes on this machine.

    ``torchrun``: ``python -m torch.distributed.run --nproc-per-node N --master-addr 127.0.0.1
    --master-port P script ...``. ``accelerate``: ``python -m accelerate.commands.launch
    --multi_gpu --num_processes N ...`` (accelerate's torchrun-based launcher; on a machine
    without GPUs the script's ``Accelerator(cpu=True)`` makes it gloo on CPU; plain ``--cpu``
    would start one process only). ``python``: one plain process, ``nproc`` must be 1.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a positive int, got {nproc!r}")
    script = str(script)
    if launcher == "python":
        if nproc != 1:
            raise ValueError("launcher='python' starts exactly one process; use torchrun or accelerate for more")
        return [sys.executable, script, *args]
    if launcher == "torchrun":
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc-per-node",
            str(nproc),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(port),
            script,
            *args,
        ]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(nproc),
        "--num_machines",
        "1",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(port),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        script,
        *args,
    ]


class LaunchError(RuntimeError):
    """A launched training script failed; the message ends with the children's output."""


def launch(
    script: str | os.PathLike[str],
    nproc: int = 2,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    *,
    launcher: str = "torchrun",
    threads_per_process: int | None = 1,
    timeout: float = 900,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in ``nproc`` processes and wait; return the ``CompletedProcess``.

    The processes meet on 127.0.0.1 at a free port (:func:`free_port`, :func:`loopback_env`),
    each with ``threads_per_process`` intra-op threads, and inherit ``env`` (default: this
    process's environment, so the offline settings and the profile carry over). Their output is
    captured. If the launcher exits with an error or runs past ``timeout`` seconds, raises
    :class:`LaunchError` with the command and the tail of the children's stdout and stderr.
    Chapter 16.
    """
    path = Path(script)
    if not path.is_file():
        raise FileNotFoundError(f"no training script at {path}")
    args = [str(a) for a in args]
    port = free_port()
    cmd = launch_command(path, nproc, args, launcher=launcher, port=port)
    child_env = loopback_env(port, threads_per_process, env)
    try:
        done = subprocess.run(cmd, env=child_env, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        errs = err.stderr.decode() if isinstance(err.stderr, bytes) else (err.stderr or "")
        raise LaunchError(
            f"{' '.join(cmd)}\ntimed out after {timeout} s\n--- stdout ---\n{out[-3000:]}\n--- stderr ---\n{errs[-6000:]}"
        ) from None
    if done.returncode != 0:
        raise LaunchError(
            f"{' '.join(cmd)}\nexited with code {done.returncode}\n--- stdout ---\n{done.stdout[-3000:]}\n"
            f"--- stderr ---\n{done.stderr[-6000:]}"
        )
    return done


# ---------------------------------------------------------------------------------------------
# communication hooks: count what DDP sends


def _log_bucket(log: list[dict[str, Any]], bucket: Any, wire_dtype: torch.dtype) -> None:
    if not isinstance(log, list):
        raise TypeError(f"the hook's state must be a list to log into, got {type(log).__name__}")
    buf = bucket.buffer()
    log.append(
        {
            "numel": buf.numel(),
            "grad_dtype": str(buf.dtype).removeprefix("torch."),
            "wire_dtype": str(wire_dtype).removeprefix("torch."),
            "bytes": buf.numel() * torch.empty((), dtype=wire_dtype).element_size(),
        }
    )


def counting_allreduce_hook(log: list[dict[str, Any]], bucket: Any) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: log the bucket, then all-reduce it (mean) exactly as DDP's default does.

    Register with ``ddp_model.register_comm_hook(log, counting_allreduce_hook)``; every
    all-reduce DDP starts appends ``{"numel", "grad_dtype", "wire_dtype", "bytes"}`` to ``log``.
    Chapter 16 counts with it how many all-reduces gradient accumulation costs with and without
    ``no_sync``.
    """
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    _log_bucket(log, bucket, bucket.buffer().dtype)
    return default_hooks.allreduce_hook(None, bucket)


def counting_bf16_compress_hook(log: list[dict[str, Any]], bucket: Any) -> torch.futures.Future[torch.Tensor]:
    """Like :func:`counting_allreduce_hook`, with PyTorch's ``bf16_compress_hook``: the gradients
    travel as bfloat16 (half the bytes) and are cast back to their own dtype after the mean.
    Chapter 16."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    _log_bucket(log, bucket, torch.bfloat16)
    return default_hooks.bf16_compress_hook(None, bucket)


def _fix_hook_annotations() -> None:
    # DDP's register_comm_hook compares the annotations with the real classes, and this module's
    # `from __future__ import annotations` turns them into strings: put the objects back.
    import torch.distributed as dist

    for hook in (counting_allreduce_hook, counting_bf16_compress_hook):
        hook.__annotations__.update(bucket=dist.GradBucket, log=list, **{"return": torch.futures.Future[torch.Tensor]})


if torch.distributed.is_available():
    _fix_hook_annotations()


# ---------------------------------------------------------------------------------------------
# pipeline parallelism: the GPipe schedule


def _check_pipeline(n_stages: int, n_micro: int) -> None:
    for name, v in (("n_stages", n_stages), ("n_micro", n_micro)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def gpipe_bubble_fraction(n_stages: int, n_micro: int) -> float:
    """Share of stage time lost to idling in GPipe: (p - 1) / (m + p - 1) (Huang et al., 2019).

    ``n_stages`` = p devices in the pipeline, ``n_micro`` = m micro-batches per mini-batch,
    forward and backward of a stage taking one time unit per micro-batch each. Chapter 16.
    """
    _check_pipeline(n_stages, n_micro)
    return (n_stages - 1) / (n_micro + n_stages - 1)


def gpipe_schedule(n_stages: int, n_micro: int) -> list[list[str]]:
    """The GPipe schedule, built from its dependencies alone: ``grid[stage][t]`` is ``"F3"``,
    ``"B3"`` (forward / backward of micro-batch 3 in time slot ``t``) or ``""`` (idle).

    A stage runs one micro-batch per slot. Forward of micro-batch j on stage s waits for its
    forward on stage s-1; backward on s waits for the backward on s+1 and, GPipe's synchronous
    flush, for every forward of the mini-batch on that stage; the last stage starts the backward
    of micro-batch j right after its forward is all done. Each stage takes the earliest slot
    its dependencies allow. Counting the empty slots checks :func:`gpipe_bubble_fraction`.
    Chapter 16.
    """
    _check_pipeline(n_stages, n_micro)
    p, m = n_stages, n_micro
    fwd = [[0] * m for _ in range(p)]
    for s in range(p):
        for j in range(m):
            ready = fwd[s - 1][j] + 1 if s > 0 else 0
            free = fwd[s][j - 1] + 1 if j > 0 else 0
            fwd[s][j] = max(ready, free)
    bwd = [[0] * m for _ in range(p)]
    for s in reversed(range(p)):
        for k, j in enumerate(reversed(range(m))):  # backward runs the micro-batches last to first
            ready = bwd[s + 1][j] + 1 if s < p - 1 else 0
            flushed = fwd[s][m - 1] + 1  # every forward of this stage is done
            free = bwd[s][j + 1] + 1 if k > 0 else 0
            bwd[s][j] = max(ready, flushed, free)
    end = max(bwd[0]) + 1
    grid = [[""] * end for _ in range(p)]
    for s in range(p):
        for j in range(m):
            grid[s][fwd[s][j]] = f"F{j}"
            grid[s][bwd[s][j]] = f"B{j}"
    return grid


__all__ = [
    "LAUNCHERS",
    "LaunchError",
    "all_reduce_gradients",
    "average_gradients",
    "counting_allreduce_hook",
    "counting_bf16_compress_hook",
    "free_port",
    "gpipe_bubble_fraction",
    "gpipe_schedule",
    "launch",
    "launch_command",
    "loopback_env",
    "pick_backend",
    "shard_indices",
    "simulate_data_parallel",
    "split_batch",
    "training_bytes_per_parameter",
    "training_memory",
]
