"""The processes that train one Student together, as the environment sees them: one process, or a torch.distributed
process group (DistributedDataParallel, launched by ``torchrun``).

The environment talks to its group through :class:`ProcessGroupView` only: which rows of a batch this process forwards
(its shard), gathering per-sample rows from every process, taking rank 0's choices (the tutor's weights, the reset
arguments), and wrapping the Student for gradient averaging. The base class is one process alone, where every one of
these is the identity, so the environment has one code path and a single-process run computes exactly what it did
before process groups existed. :class:`DistributedGroupView` is a real process group; it counts the bytes it hands to
every collective, by kind (:data:`COMMUNICATION_KINDS`), in ``sent_bytes``.
"""

# Annotations are evaluated here (no ``from __future__ import annotations``): DDP checks a communication hook's
# annotations against the classes themselves.
import io
import math
import os
from collections import Counter
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

COMMUNICATION_KINDS = {
    "setup": "per Student built (reset or restore): DDP's initial copy of the Student from rank 0, rank 0's reset "
    "arguments (a resume's epoch-start state included), whether the Student trains at all",
    "states": "per training forward: every sample's loss, correctness and p(true class), and the state rows",
    "loss": "per update: the shard's weighted loss, averaged into the whole batch's",
    "weights": "per tutored step: rank 0's weights (one per sample) and how many of them it clipped",
    "gradients": "per update: DDP's gradient buckets, all-reduced (averaged)",
    "rewards": "per tutored step: the per-sample rewards (val_alignment: also its trusted batch's head-gradient inputs)",
    "evaluation": "per evaluation: the frame scores and the Student's buffers (BatchNorm statistics) from rank 0",
}
"""What each kind of ``sent_bytes`` counts."""

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
"""The environment variables torchrun gives each process it starts, which ``init_process_group`` reads."""


class ProcessGroupView:
    """One process alone training its Student: the view the environment uses when nothing is distributed.

    Every collective here is the identity and nothing is sent, so the environment's single code path reduces to
    plain single-process training. :class:`DistributedGroupView` overrides each method for a real process group.
    """

    rank = 0
    world_size = 1

    def __init__(self) -> None:
        self.sent_bytes: Counter[str] = Counter()
        """Bytes this process handed to collectives so far, by kind (:data:`COMMUNICATION_KINDS`)."""

    def shard(self, total: int) -> slice:
        """This process's contiguous share of ``total`` rows; the first ``total % world_size`` ranks get one more."""
        sizes = _shard_sizes(total, self.world_size)
        start = sum(sizes[: self.rank])
        return slice(start, start + sizes[self.rank])

    def equal_shard(self, total: int, name: str) -> slice:
        """:meth:`shard` of a setting ``name`` that must divide by the world size (the training batch)."""
        if total % self.world_size:
            multiple = max(self.world_size, total // self.world_size * self.world_size)
            raise ValueError(
                f"{name} {total} does not divide by the {self.world_size} processes training the Student: each one "
                "forwards an equal shard of every batch, and DDP's average of the shards' gradients equals the whole "
                f"batch's mean only when the shards are equal; set {name} to a multiple of {self.world_size} (e.g. "
                f"{multiple}), or start a number of processes that divides {total}"
            )
        return self.shard(total)

    def wrap(self, student: nn.Module) -> nn.Module:
        """The module the training forward goes through (its backward averages the gradients over the group)."""
        return student

    def all_gather_rows(self, *tensors: torch.Tensor, total: int, kind: str) -> tuple[torch.Tensor, ...]:
        """Every process's :meth:`shard` of each tensor's rows, concatenated in rank order: ``total`` rows each."""
        return tensors

    def broadcast(self, tensor: torch.Tensor, kind: str) -> torch.Tensor:
        """Rank 0's ``tensor`` (same shape and dtype on every rank), on every rank."""
        return tensor

    def broadcast_object(self, value: Any, kind: str) -> Any:
        """Rank 0's ``value`` (anything ``torch.save`` takes; tensors arrive on the CPU), on every rank."""
        return value

    def average(self, tensor: torch.Tensor, kind: str) -> torch.Tensor:
        """The mean over the group of every process's ``tensor``."""
        return tensor

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Give every process rank 0's buffers of ``module`` (BatchNorm running statistics), counted as evaluation."""

    def close(self) -> None:
        """Leave the process group (nothing to leave for one process)."""


class DistributedGroupView(ProcessGroupView):
    """A torch.distributed process group training one Student with DistributedDataParallel: one rank per process.

    Collectives run on ``device`` (the rank's GPU with NCCL, the CPU with gloo). ``sent_bytes`` counts the payload each
    collective takes from this rank: the padded shard for an all-gather, the whole tensor for a broadcast (the
    receivers' counts equal the sender's) or an all-reduce. The bytes on the wire depend on the backend's algorithm:
    a ring all-reduce sends about ``2 (N - 1) / N`` times its payload, an all-gather ``N - 1`` times it.

    Build it from torchrun's environment with :meth:`from_torchrun`.
    """

    def __init__(self, rank: int, world_size: int, device: torch.device, process_group: dist.ProcessGroup | None = None) -> None:
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a group of {world_size} processes")
        self.rank = rank
        self.world_size = world_size
        self.device = device
        self.process_group = process_group

    @classmethod
    def from_torchrun(cls, device: torch.device) -> "DistributedGroupView":
        """Join the process group torchrun set up (its environment variables): NCCL on CUDA, gloo on the CPU.

        ``device`` is where the environment trains (the resolved env setting): on CUDA each rank takes the GPU of its
        ``LOCAL_RANK`` (``cuda`` and ``auto`` mean it; ``cuda:K`` for another K is refused).
        """
        missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
        if missing:
            raise RuntimeError(
                f"the process group needs the environment torchrun gives each process it starts ({', '.join(missing)} "
                "not set); launch with torchrun, e.g. torchrun --nproc_per_node=2 -m experiments.cli train --ddp ..."
            )
        local_rank = int(os.environ["LOCAL_RANK"])
        if device.type == "cuda":
            if device.index not in (None, local_rank):
                raise ValueError(
                    f"device {device} under torchrun: each process trains on the GPU of its LOCAL_RANK ({local_rank} "
                    "here); set the device to auto or cuda"
                )
            if local_rank >= torch.cuda.device_count():
                raise RuntimeError(
                    f"LOCAL_RANK {local_rank} has no GPU: this node has {torch.cuda.device_count()}; start at most that "
                    "many processes per node (torchrun --nproc_per_node)"
                )
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)  # NCCL and tensors made with device "cuda" use this GPU
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        return cls(dist.get_rank(), dist.get_world_size(), device)

    def wrap(self, student: nn.Module) -> nn.Module:
        """``student`` in DistributedDataParallel, whose backward averages the gradients; on CUDA with SyncBatchNorm.

        SyncBatchNorm normalises with the statistics of the whole batch, as one process would; torch has no CPU
        SyncBatchNorm, so there each rank normalises with its shard's statistics (standard DDP), and a BatchNorm
        Student then trains differently from one process with the same batch (a BatchNorm-free one does not).
        The gradient buckets are counted by a communication hook that then does DDP's default all-reduce.
        """
        device = next(student.parameters()).device
        if device != self.device:
            raise ValueError(
                f"the Student is on {device} but rank {self.rank} communicates on {self.device}; under torchrun set the "
                "env's device to auto, cuda or cpu (each rank takes the GPU of its LOCAL_RANK)"
            )
        if device.type == "cuda":
            # In place below the top: the BatchNorm children are replaced, sharing their parameters and buffers.
            student = nn.SyncBatchNorm.convert_sync_batchnorm(student, self.process_group)
        # Buffers are not broadcast at every forward: with SyncBatchNorm (or without BatchNorm) they are the same on
        # every rank already; otherwise broadcast_buffers gives every rank rank 0's before each evaluation.
        network = DistributedDataParallel(
            student,
            device_ids=[device.index] if device.type == "cuda" else None,
            process_group=self.process_group,
            forward_sync_buffers=False,
        )
        network.register_comm_hook(self, _counted_allreduce)
        # DDP's construction broadcasts rank 0's parameters and buffers, so every rank starts from the same Student.
        self.sent_bytes["setup"] += sum(_nbytes(tensor) for tensor in [*student.parameters(), *student.buffers()])
        return network

    def all_gather_rows(self, *tensors: torch.Tensor, total: int, kind: str) -> tuple[torch.Tensor, ...]:
        # One collective for all the tensors: their rows travel side by side as raw bytes, whatever their dtypes.
        sizes = _shard_sizes(total, self.world_size)
        rows = sizes[self.rank]
        if any(len(tensor) != rows for tensor in tensors):
            raise ValueError(f"rank {self.rank} holds {rows} of the {total} rows; got {[len(t) for t in tensors]}")
        columns = [_as_bytes(tensor) for tensor in tensors]
        packed = torch.zeros(max(sizes), sum(c.shape[1] for c in columns), dtype=torch.uint8, device=self.device)
        if rows:
            packed[:rows] = torch.cat(columns, dim=1)
        chunks = [torch.empty_like(packed) for _ in range(self.world_size)]
        self.sent_bytes[kind] += _nbytes(packed)
        dist.all_gather(chunks, packed, group=self.process_group)
        gathered = torch.cat([chunk[:size] for chunk, size in zip(chunks, sizes, strict=True)])
        results, start = [], 0
        for tensor, column in zip(tensors, columns, strict=True):
            width = column.shape[1]
            raw = gathered[:, start : start + width].contiguous()
            results.append(raw.view(tensor.dtype).reshape(total, *tensor.shape[1:]).to(tensor.device))
            start += width
        return tuple(results)

    def broadcast(self, tensor: torch.Tensor, kind: str) -> torch.Tensor:
        payload = tensor.to(self.device).contiguous()
        self.sent_bytes[kind] += _nbytes(payload)
        dist.broadcast(payload, src=0, group=self.process_group)
        return payload.to(tensor.device)

    def broadcast_object(self, value: Any, kind: str) -> Any:
        size = torch.zeros(1, dtype=torch.int64, device=self.device)
        if self.rank == 0:
            buffer = io.BytesIO()
            torch.save(value, buffer)
            payload = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8).to(self.device)
            size[0] = len(payload)
        dist.broadcast(size, src=0, group=self.process_group)
        if self.rank != 0:
            payload = torch.empty(int(size), dtype=torch.uint8, device=self.device)
        self.sent_bytes[kind] += _nbytes(size) + _nbytes(payload)
        dist.broadcast(payload, src=0, group=self.process_group)
        if self.rank == 0:
            return value
        # The bytes come from rank 0 of this run's own group, so a full (not weights-only) load is safe here.
        return torch.load(io.BytesIO(payload.cpu().numpy().tobytes()), map_location="cpu", weights_only=False)

    def average(self, tensor: torch.Tensor, kind: str) -> torch.Tensor:
        total = tensor.to(self.device, copy=True)
        self.sent_bytes[kind] += _nbytes(total)
        dist.all_reduce(total, group=self.process_group)
        return (total / self.world_size).to(tensor.device)

    def broadcast_buffers(self, module: nn.Module) -> None:
        buffers = list(module.buffers())
        if not buffers:
            return
        packed = self.broadcast(
            torch.cat([_as_bytes(buffer.reshape(1, buffer.numel())) for buffer in buffers], dim=1), "evaluation"
        )
        start = 0
        for buffer in buffers:
            width = _nbytes(buffer)
            buffer.copy_(packed[0, start : start + width].contiguous().view(buffer.dtype).reshape(buffer.shape))
            start += width

    def close(self) -> None:
        """Leave the process group (torch.distributed's ``destroy_process_group``)."""
        if dist.is_initialized():
            dist.destroy_process_group(self.process_group)


def _shard_sizes(total: int, world_size: int) -> list[int]:
    """Rows of each rank's shard of ``total`` rows: as equal as can be, the first ``total % world_size`` one more."""
    base, extra = divmod(total, world_size)
    return [base + (rank < extra) for rank in range(world_size)]


def _as_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``'s rows as raw bytes: shape ``(rows, bytes per row)``, uint8."""
    return tensor.contiguous().reshape(len(tensor), math.prod(tensor.shape[1:])).view(torch.uint8)


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _counted_allreduce(view: DistributedGroupView, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP's default gradient all-reduce (averaging), with the bucket's bytes counted as ``gradients``."""
    view.sent_bytes["gradients"] += _nbytes(bucket.buffer())
    return default_hooks.allreduce_hook(view.process_group, bucket)
