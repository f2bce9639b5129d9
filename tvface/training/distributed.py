"""Multi-process training under ``torchrun``: DistributedDataParallel with a global batch.

    torchrun --nproc_per_node 4 -m tvface.cli train --profile gpu-full --stage all --out RUN_DIR
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
        -m tvface.cli train --profile paper --out RUN_DIR                       # two nodes

``torchrun`` starts the processes and sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; there is no
launcher of ours. What a run with W processes computes is the same as one process on the same
global batch (``tests/test_distributed.py`` checks the parameters after N steps):

* ``train.batch_size`` stays the **global** batch of sequences; the batch of step ``s`` is chosen
  exactly as in one process (a function of ``(train.seed, s)``) and rank ``r`` takes the ``r``-th
  contiguous ``batch_size / W`` sequences of it (a sampler by sequence: the frames of one sequence
  stay on one rank, so the shape/detail consistency swaps see the whole window);
* gradients are averaged by DDP; every loss term is a mean over equal-sized per-rank batches, so the
  average is the global mean. (Terms normalised by a batch *sum of weights*, i.e. the landmark loss
  with per-point confidences, are normalised per rank: equal to one process whenever the ranks'
  weight sums are equal, as they are with uniform weights.);
* BatchNorm statistics are those of the global batch (:class:`GlobalBatchNorm2d`, differentiable
  all-reduce), on every backend: ``nn.SyncBatchNorm`` refuses CPU tensors, and gloo-on-CPU is what
  the equality test runs;
* rank 0 alone writes checkpoints, the manifest, metrics and TensorBoard; every rank reads the same
  checkpoint on ``--resume`` (model, optimiser and RNG states are identical across ranks), so resume
  is exact as in one process. Logged losses are the mean over ranks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job (``world_size == 1``: a plain single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def to_dict(self) -> dict:
        return {"world_size": self.world_size, "backend": self.backend or None}


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: str) -> DistContext:
    """Join the process group ``torchrun`` describes in the environment (gloo on CPU, NCCL on CUDA).

    Returns a single-process context when ``WORLD_SIZE`` is unset or 1.
    """
    world = env_world_size()
    if world <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device == "cuda" and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(rank, world, local_rank, backend)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def rank_slice(n: int, ctx: DistContext) -> slice:
    """This rank's contiguous share of a global batch of ``n`` items (``n`` divisible by the world size)."""
    if n % ctx.world_size:
        raise ValueError(f"a global batch of {n} sequences does not split over {ctx.world_size} processes; "
                         f"set train.batch_size to a multiple of {ctx.world_size}")
    per = n // ctx.world_size
    return slice(ctx.rank * per, (ctx.rank + 1) * per)


def mean_over_ranks(values: Tensor, ctx: DistContext) -> Tensor:
    """Mean of ``values`` (any shape, float) over the ranks; the input when single-process."""
    if not ctx.enabled:
        return values
    out = values.detach().clone()
    dist.all_reduce(out)
    return out / ctx.world_size


def any_rank(flag: bool, ctx: DistContext, device: torch.device | str = "cpu") -> bool:
    """True when ``flag`` is true on any rank (every rank must call it: a collective)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


# --------------------------------------------------------------------------- global BatchNorm
class _AllReduceSum(torch.autograd.Function):
    """y = sum over ranks of x, on every rank. Each rank's loss depends on y, so dL/dx on a rank is the
    sum over ranks of dL_r/dy: the backward is the same all-reduce of the incoming gradients."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        g = grad.clone()
        dist.all_reduce(g)
        return g


def _all_reduce_sum(x: Tensor) -> Tensor:
    """Differentiable sum over ranks."""
    return _AllReduceSum.apply(x)


def global_batch_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, running_mean: Tensor | None,
                      running_var: Tensor | None, momentum: float, eps: float) -> Tensor:
    """Training-mode batch norm with the statistics of the batch summed over every rank.

    Args:
        x: (N, C, *) this rank's activations (N may differ between ranks).
        weight, bias: (C,) affine parameters or None.
        running_mean, running_var: (C,) buffers updated in place (unbiased variance, as ``F.batch_norm``).
    Returns:
        (N, C, *) normalised activations. Two passes (mean, then the centred second moment), as
        ``F.batch_norm`` computes them, so one process and W processes agree to rounding.
    """
    c = x.shape[1]
    dims = [0] + list(range(2, x.dim()))
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics in >= fp32
    count = torch.tensor([x.numel() / c], dtype=xf.dtype, device=x.device)
    s = _all_reduce_sum(torch.cat([xf.sum(dims), count]))  # (C + 1,)
    n = s[c]
    mean = s[:c] / n
    shape = [1, c] + [1] * (x.dim() - 2)
    centred = xf - mean.view(shape)
    var = _all_reduce_sum(centred.square().sum(dims)) / n  # (C,) biased, what normalisation uses
    y = centred * torch.rsqrt(var + eps).view(shape)
    if weight is not None:
        y = y * weight.view(shape) + bias.view(shape)
    if running_mean is not None:
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
            running_var.mul_(1 - momentum).add_(var.detach() * n / max(float(n) - 1, 1.0), alpha=momentum)
    return y.to(x.dtype)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training statistics are those of the global batch over all ranks.

    Same parameters, buffers and state-dict keys as ``nn.BatchNorm2d`` (checkpoints are
    interchangeable); single-process or in eval mode it *is* ``nn.BatchNorm2d``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        if self.momentum is None:
            raise ValueError("GlobalBatchNorm2d needs a momentum (cumulative averages are not supported)")
        self.num_batches_tracked.add_(1)
        return global_batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var,
                                 self.momentum, self.eps)


def convert_batchnorm(module: nn.Module) -> int:
    """Make every ``nn.BatchNorm2d`` in ``module`` a :class:`GlobalBatchNorm2d` in place; returns how many."""
    n = 0
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = GlobalBatchNorm2d
            n += 1
    return n


class StepModule(nn.Module):
    """The training forward (encode + the stage's loss terms) as one module, what DDP wraps.

    DDP hooks gradients of the parameters reached through ``forward``; routing the whole step through
    it lets one DDP wrapper see the encoder, the detail decoder and every loss term.
    """

    def __init__(self, model: nn.Module, objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective  # not a module of ours: its frozen networks hold no trainable parameter

    def forward(self, image: Tensor, landmark: Tensor, mask: Tensor, flows, stage: str):
        from tvface.models.reconstructor import Codes
        from tvface.training.objective import Batch

        batch = Batch(image=image, landmark=landmark, mask=mask, flows=flows)
        kw = {} if flows is None else {"flows": flows}
        if stage == "detail":  # E_c frozen (no parameter of it requires grad): its codes carry no graph
            codes = self.model.encode(image, with_detail=True, **kw)
            codes = Codes({k: v.detach() for k, v in codes.coarse.items()}, codes.detail)
        else:
            codes = self.model.encode(image, with_detail=False, **kw)
        return self.objective(self.model, codes, batch, stage)


def wrap_ddp(step_module: StepModule, ctx: DistContext, device: torch.device) -> nn.Module:
    """DDP around the step for the current stage's trainable parameters (rebuilt when a stage starts)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    # broadcast_buffers=False: BN statistics are already global (GlobalBatchNorm2d), and the face model's
    # buffers never change; find_unused_parameters: a stage may leave code heads without gradient.
    return DDP(step_module, device_ids=ids, broadcast_buffers=False, find_unused_parameters=True)
