"""Several processes launched by torchrun: the process group, who is who, and the few collectives we use.

torchrun (PyTorch's launcher) starts one process per GPU (or per CPU slot) and gives each RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in its environment; `init()` (called by the CLI)
joins them into one process group. Without those variables (a plain `privimage ...`) nothing is
initialised and every helper answers as for the only process: rank 0 of 1, collectives are no-ops, so
one process behaves exactly as before.

Backends: gloo for CPU tensors, and NCCL for CUDA tensors when CUDA is present ("cpu:gloo,cuda:nccl"),
each process on cuda:LOCAL_RANK (so device "cuda" / "auto" means this process's GPU).

Failures: when one process dies, torchrun stops the others and exits non-zero naming the failed rank.
As a backstop every collective gives up after PRIVIMAGE_DIST_TIMEOUT seconds (default 1800) instead of
waiting forever for a process that will never arrive (a lost node, a rank stuck outside a collective).
Raise it when rank 0 works alone for longer (e.g. training the semantic classifier or the CA
classifiers of a large run) while the others wait.

    >>> init()                      # doctest: +SKIP
    >>> all_reduce_sum({"w": torch.ones(2)})   # {"w": tensor([N, N])} with N processes   # doctest: +SKIP
"""

import atexit
import json
import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist

from privimage.errors import UserError

log = logging.getLogger(__name__)
TIMEOUT_ENV = "PRIVIMAGE_DIST_TIMEOUT"  # seconds a collective may wait for the other processes
DEFAULT_TIMEOUT_S = 1800
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """True in a process started by torchrun (its environment names this process's rank)."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE"))


def active() -> bool:
    """True once this process has joined a process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the only process that writes files (ledger, checkpoints, logs, samples, report)."""
    return rank() == 0


def timeout_s() -> float:
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise UserError(f"{TIMEOUT_ENV}={text!r}: expected a number of seconds > 0")
    return value


def init() -> bool:
    """Join torchrun's process group when launched by torchrun; returns whether there is one.

    Idempotent; the group is destroyed at exit (atexit), so a finished process leaves cleanly.
    """
    if active() or not launched():
        return active()
    missing = [name for name in TORCHRUN_ENV if name not in os.environ]
    if missing:
        raise UserError(f"RANK and WORLD_SIZE are set but not {', '.join(missing)}: launch with torchrun")
    # torch._dynamo (torch.optim imports it) imported AFTER the group exists keeps hidden references to it
    # (torch 2.13), so destroy() could not free it: gloo's worker threads then outlived Python's finalization,
    # and one dropping a finished collective's tensors there (needs the GIL) aborted the process: SIGABRT,
    # "terminate called without an active exception", ~1 run in 16 under load. Imported first, it keeps none.
    import torch._dynamo  # noqa: F401

    cuda = torch.cuda.is_available()
    if cuda:  # before the group: NCCL binds each process to its own GPU
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s()))
    atexit.register(destroy)
    if is_main():
        log.info("distributed: %d processes (%s)", world_size(), dist.get_backend())
    return True


def destroy() -> None:
    """Free the process group; its worker threads end here, not during Python's finalization (see init)."""
    if active():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_sum(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum every tensor over all processes, in place (one flat buffer per dtype and device); returns them.

    Every process must call it with the same names and shapes, also with nothing to add (zeros).
    """
    if world_size() == 1 or not tensors:
        return tensors
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors.values():
        groups.setdefault((t.dtype, t.device), []).append(t)
    for group in groups.values():
        flat = torch.cat([t.reshape(-1) for t in group])  # (sum of numels,)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        for t, part in zip(group, flat.split([t.numel() for t in group])):
            t.copy_(part.view(t.shape))
    return tensors


def broadcast_bytes(data: bytes | None, *, src: int = 0) -> bytes:
    """Rank `src`'s bytes on every process (others pass None). Over gloo, on CPU; never logged."""
    if world_size() == 1:
        return bytes(data or b"")
    size = torch.tensor([len(data) if rank() == src else 0], dtype=torch.int64)
    dist.broadcast(size, src)
    buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8) if rank() == src and len(data)
           else torch.zeros(int(size), dtype=torch.uint8))
    if int(size):
        dist.broadcast(buf, src)
    return bytes(buf.numpy().tobytes()) if int(size) else b""


def broadcast_json(value=None, *, src: int = 0):
    """Rank `src`'s JSON-able value on every process (others pass anything)."""
    if world_size() == 1:
        return value
    return json.loads(broadcast_bytes(json.dumps(value).encode() if rank() == src else None, src=src))


def broadcast_tensors(tensors: dict[str, torch.Tensor] | None, *, src: int = 0) -> dict[str, torch.Tensor]:
    """Rank `src`'s dict of tensors on every process (others pass None); returned on the CPU.

    Used to hand rank 0's checkpoint to the other processes, so they need not share its file system.
    """
    if world_size() == 1:
        return dict(tensors or {})
    meta = broadcast_json({k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in tensors.items()}
                          if rank() == src else None, src=src)
    out = {}
    for name, (shape, dtype) in meta.items():
        t = (tensors[name].detach().to("cpu", copy=True).contiguous() if rank() == src
             else torch.empty(shape, dtype=getattr(torch, dtype)))
        dist.broadcast(t, src)  # CPU tensor: gloo
        out[name] = t
    return out


def broadcast_module(module: torch.nn.Module, *, src: int = 0) -> None:
    """Copy rank `src`'s parameters and buffers into `module` on every process (same architecture)."""
    if world_size() == 1:
        return
    state = module.state_dict()
    received = broadcast_tensors(state if rank() == src else None, src=src)
    with torch.no_grad():
        for name, t in state.items():
            t.copy_(received[name])


def broadcast_optimizer(optimizer: torch.optim.Optimizer, *, src: int = 0) -> None:
    """Load rank `src`'s optimizer state (e.g. Adam's moments after a resume) into every process's optimizer."""
    if world_size() == 1:
        return
    state = optimizer.state_dict()
    groups = broadcast_json(state["param_groups"] if rank() == src else None, src=src)
    flat = {f"{i}.{k}": v for i, s in state["state"].items() for k, v in s.items() if torch.is_tensor(v)}
    scalars = broadcast_json({f"{i}.{k}": v for i, s in state["state"].items() for k, v in s.items()
                              if not torch.is_tensor(v)} if rank() == src else None, src=src)
    received = broadcast_tensors(flat if rank() == src else None, src=src)
    if rank() == src:
        return
    device = next((p.device for g in optimizer.param_groups for p in g["params"]), torch.device("cpu"))
    per_param: dict[int, dict] = {}
    for key, value in [*received.items(), *scalars.items()]:
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value.to(device) if torch.is_tensor(value) and \
            name != "step" else value
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})


def shard(n: int) -> range:
    """This process's share of range(n): every world_size-th index from its rank (the shards partition it)."""
    return range(rank(), n, world_size())


def block(n: int) -> range:
    """This process's contiguous block of range(n) (the blocks partition it, in rank order)."""
    per = -(-n // world_size())
    return range(min(n, rank() * per), min(n, (rank() + 1) * per))
