"""torchrun for ``extract`` and ``distill``: the process group, each rank's device, and small collectives.

torchrun is the engine (on one machine or several: see the README); this module only reads its environment.
"""

from __future__ import annotations

import json
import os

import torch


def distributed(device: str) -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment, with a process group when world > 1:
    NCCL with each rank on GPU ``LOCAL_RANK`` when ``device`` is CUDA, gloo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        # torch._dynamo (imported by transformers and torch.compile) keeps references to the default group when
        # it is first imported after the group exists; destroy_process_group then cannot free the group, and
        # gloo's threads live on into interpreter teardown, where they can abort a finished run (SIGABRT: three
        # failed two-process test runs out of about fifteen). Imported first, it never sees the group.
        import torch._dynamo  # noqa: F401

        if device.startswith("cuda"):
            visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if local_rank >= visible:
                raise ValueError(
                    f"--device {device} under torchrun: local rank {local_rank} needs GPU {local_rank}, "
                    f"but {visible} GPU(s) are visible"
                )
            # The rank's GPU becomes the current device before anything else touches CUDA: NCCL's communicator,
            # barrier() and every call that takes the current device use it (a run without this hung on the
            # two-H200 machine: rank 1 reported no batch while rank 0 waited at the final barrier).
            gpu = torch.device("cuda", local_rank)
            torch.cuda.set_device(gpu)
            dist.init_process_group("nccl", device_id=gpu)
        else:
            dist.init_process_group("gloo")
    return dist.get_rank(), world, local_rank


def rank_device(device: str, world: int, local_rank: int) -> str:
    """The device one process runs on. Under torchrun (world > 1) a CUDA ``--device`` means the rank's own
    GPU, ``cuda:LOCAL_RANK``, the one ``distributed`` bound NCCL to (pick the GPUs with
    ``CUDA_VISIBLE_DEVICES``, not with an index); any other device is taken as given."""
    return f"cuda:{local_rank}" if world > 1 and device.startswith("cuda") else device


def end_distributed() -> None:
    """Tear down the process group before exit; left to the interpreter's teardown, gloo's threads can abort."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def gather_json(value, world: int, device: str | torch.device) -> list:
    """Every rank's JSON-able ``value``, in rank order, on every rank (as UTF-8 bytes in tensors: nothing is
    pickled). One rank: ``[value]``."""
    if world == 1:
        return [value]
    import torch.distributed as dist

    data = torch.tensor(list(json.dumps(value).encode()), dtype=torch.uint8, device=device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.int64, device=device))
    longest = int(max(size.item() for size in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: data.numel()] = data
    gathered = [torch.zeros(longest, dtype=torch.uint8, device=device) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return [json.loads(bytes(g[: int(n.item())].tolist()).decode()) for g, n in zip(gathered, sizes)]
