"""What the loop needs from its surroundings, apart from the GAN maths: DDP gradient averaging and
buffer broadcast, the non-finite-loss error, seeded random streams, compilation, an eval-mode
context, and a CPU-only environment switch.

Why the loop averages gradients itself: Lightning wraps the whole module in one
DistributedDataParallel, whose reducer expects every parameter to get a gradient in every backward.
A discriminator step never touches the generator's parameters, so it fails with "parameters that
were not used in producing the loss". Instead of paying for `find_unused_parameters`, the base turns
the reducer off (`disable_ddp_reducer`) and averages exactly the parameters being stepped after each
backward (`all_reduce_gradients`), one flat buffer per step.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss is NaN or infinite; training stops before any update."""


def distributed() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def disable_ddp_reducer(trainer) -> None:
    """Stops the DDP wrapper (if any) from synchronising gradients: `all_reduce_gradients` does."""
    wrapper = trainer.strategy.model if trainer is not None else None
    if isinstance(wrapper, DistributedDataParallel):
        wrapper.require_backward_grad_sync = False


def all_reduce_gradients(optimizer, finite: Optional[Tensor] = None) -> int:
    """Averages the gradients of `optimizer`'s parameters across ranks, as DDP would, and returns on
    how many ranks `finite` (this rank's "loss is finite" flag) was false.

    One flat all-reduce per step. A parameter without a gradient on some rank counts as zero there;
    one without a gradient on every rank keeps `grad = None` (DDP semantics). The per-parameter "has
    a gradient" flags and the finite flag travel in the same buffer, so ranks that disagree on which
    parameters got gradients cannot desynchronise the collective, and a non-finite loss on any rank
    stops every rank at the same step (no collective of its own).
    """
    if not distributed():
        return 0 if finite is None else int(not bool(finite))
    params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    if not params:  # nothing to average: the flag alone, on the loss's device (NCCL takes no CPU tensors)
        flag = torch.zeros(1) if finite is None else (~finite).reshape(1).float()
        dist.all_reduce(flag)
        return int(flag.item())
    dtype, device = params[0].dtype, params[0].device
    not_finite = torch.zeros(1, dtype=dtype, device=device) if finite is None else (~finite).reshape(1).to(dtype)
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
        + [torch.tensor([p.grad is not None for p in params], dtype=dtype, device=device), not_finite]
    )
    dist.all_reduce(flat)
    flags = flat[-len(params) - 1:].tolist()
    bad_ranks = int(round(flags[-1]))
    if bad_ranks:  # the caller stops before the update; leave the gradients as they are
        return bad_ranks
    flat = flat[:-1]
    flat[: -len(params)] /= dist.get_world_size()
    has_grad = [f > 0 for f in flags[:-1]]
    offset = 0
    for p, used in zip(params, has_grad):
        chunk = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
        if not used:
            continue
        if p.grad is None:
            p.grad = chunk.clone()
        else:
            p.grad.copy_(chunk)
    return 0


def broadcast_buffers(module: nn.Module, skip: tuple[str, ...] = ()) -> None:
    """Rank 0's floating-point buffers (BatchNorm running statistics) to every rank, except `skip`.

    Stock DDP broadcasts them before every forward; with its reducer bypassed that is off, and in
    training mode BatchNorm uses batch statistics, so only evaluation (and the end of training)
    needs them: the base calls this before every validation and when training ends.
    """
    if not distributed():
        return
    buffers = [b for name, b in module.named_buffers() if name not in skip and b.is_floating_point()]
    if buffers:
        flat = torch.cat([b.reshape(-1) for b in buffers])
        dist.broadcast(flat, src=0)
        offset = 0
        for b in buffers:
            b.copy_(flat[offset : offset + b.numel()].view_as(b))
            offset += b.numel()


def skip_nvml_probe_without_gpus(device: torch.device) -> None:
    """Training on CPU on a machine without GPUs: stop every Adam step from probing for them.

    Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 when imported (a fork-safe CUDA check), and
    `Adam.step` asks `torch.accelerator.is_available()` at every step; with the variable set and
    no GPU driver, each ask retries loading NVML (about 0.1 ms per Adam step on a 2-core CPU, a few
    percent of a 2D step). Where CUDA reports no device there is nothing for the check to protect,
    so it falls back to the runtime's (cheap) device count.
    """
    if device.type == "cpu" and os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1" and torch.cuda.device_count() == 0:
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"


class eval_mode:
    """Context manager: modules in eval mode, previous modes restored on exit."""

    def __init__(self, *modules: nn.Module):
        self.modules = modules

    def __enter__(self):
        self.modes = [m.training for m in self.modules]
        for m in self.modules:
            m.eval()

    def __exit__(self, *exc):
        for m, mode in zip(self.modules, self.modes):
            m.train(mode)


def seeded_rng(device: torch.device, *keys: int) -> torch.Generator:
    """A torch.Generator on `device` seeded by (run seed, *keys): independent streams per key tuple."""
    seed = np.random.SeedSequence([torch.initial_seed(), *keys]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(seed))


def compile_modules(modules: list[nn.Module], options: bool | dict) -> None:
    """`torch.compile`s the modules' forward passes in place (`nn.Module.compile`, so state-dict keys
    are unchanged), each once: `options` True for the defaults, or a dict of torch.compile arguments."""
    options = {} if options is True else dict(options)
    for module in modules:
        if getattr(module, "_compiled_call_impl", None) is None:  # not twice (fit after fit)
            module.compile(**options)


def non_finite_loss_error(name: str, loss: Tensor, where: str, bad_ranks: int = 0) -> NonFiniteLossError:
    """The error for a NaN/inf loss `name`; `where` says at which step, `bad_ranks` on how many ranks."""
    value = loss.item() if loss.numel() == 1 else loss
    what = f" non-finite on {bad_ranks} of {dist.get_world_size()} ranks (this rank's: {value})" if bad_ranks else f" {value}"
    return NonFiniteLossError(
        f"{name} is{what} at {where}; training stopped before this update, the last checkpoint is untouched. "
        f"Lower the learning rates, enable gradient_clip_val, or check the data."
    )
