"""One process per GPU (torchrun) or a single process: setup, gathering, a finite check across ranks,
and the random state every rank saves so that a resumed run repeats the interrupted one exactly."""

from __future__ import annotations

import os
import random

import numpy as np
import torch
import torch.distributed as dist


def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment; a single process without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return (dist.get_rank() if dist.is_initialized() else 0), world, device


def gather(obj, world: int) -> list:
    """`obj` of every rank, in rank order."""
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def all_finite(loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every rank (all ranks stop together)."""
    ok = torch.isfinite(loss.detach()).float()
    if dist.is_initialized():
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item())


def rng_state(generator: torch.Generator) -> dict:
    """Every random state of this process, and the generator of the head choice."""
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": np.random.get_state(), "python": random.getstate(), "heads": generator.get_state()}


def set_rng_state(generator: torch.Generator, s: dict) -> None:
    """Restore what `rng_state` saved."""
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    generator.set_state(s["heads"])
