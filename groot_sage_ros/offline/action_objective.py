"""``distill --action-weight``: training the student through the teacher's frozen action head."""

from __future__ import annotations

import torch


class ActionObjective:
    """The student's features through the teacher's frozen action head: at sampled flow-matching times, noisy
    actions and states, the head's velocity from the student's features is matched to its velocity from the
    teacher's (MSE over the embodiment's real action dimensions). Pads are zero for both, so the head sees
    the same context length; each rank samples from (seed, step), so a resumed run draws the same.

    ``fast`` (the default) runs the head's fast-path layers (fused projections; compiled on CUDA, where the
    head is loaded in bfloat16), the reference its modules as built; the same arithmetic (a test compares
    their gradients). The teacher's velocity needs no gradient and is computed once per step.

    ``samples`` (0: all) takes the action term on the first ``samples`` of each batch only (the batch order
    is already shuffled): the head's arithmetic falls in proportion, but on an H100 at batch 32 a step did not
    get faster, the head's passes being bound by kernel launches there (docs/offline.md)."""

    def __init__(self, head, policy, seed: int, fast: bool = True, samples: int = 0):
        self.head, self.seed, self.fast, self.samples = head, seed, fast, samples
        if fast:
            head.use_fast_layers()
        self.embodiment_id = policy.normalizer.embodiment_id
        self.action_width = sum(key.width for key in policy.normalizer.action_keys)
        self.state_width = sum(key.width for key in policy.normalizer.state_keys)

    def loss(
        self, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, image_mask: torch.Tensor, step: int
    ) -> torch.Tensor:
        """student, teacher (B, L, D) in teacher units, mask (B, L) real tokens, image_mask (B, L) -> scalar."""
        if self.samples:  # the first rows: (S, L, D), (S, L)
            student, teacher, mask, image_mask = (x[: self.samples] for x in (student, teacher, mask, image_mask))
        batch, device = student.shape[0], student.device
        # Drawn on the step's device: a copy from host memory would wait for the GPU to finish the queued work
        # (CUDA syncs the stream before copying from pageable memory), mid-step.
        generator = torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + step)
        t = torch.rand(batch, generator=generator, device=device)  # (B,) flow-matching times
        noise_shape = (batch, self.head.action_horizon, self.head.action_dim)
        actions = torch.randn(noise_shape, generator=generator, device=device)  # (B, H, A)
        states = torch.zeros(batch, self.head.state_width, device=device)  # (B, S): the embodiment's part drawn
        states[:, : self.state_width] = torch.rand(batch, self.state_width, generator=generator, device=device) * 2 - 1
        keep = mask.unsqueeze(-1).to(student.dtype)  # (B, L, 1)
        args = (mask, image_mask, actions, t, states, self.embodiment_id, self.fast)
        with torch.no_grad():
            target = self.head.action_velocity(teacher * keep, *args)
        got = self.head.action_velocity(student * keep, *args)  # (B, H, A)
        return ((got.float() - target.float())[..., : self.action_width] ** 2).mean()


def action_objective(args, dataset, device) -> ActionObjective | None:
    """The teacher's head for ``--action-weight`` (its backbone is not loaded), checked against the dataset."""
    if not args.action_weight:
        return None
    from ..checkpoint import content_hash, read_checkpoint_files
    from ..engine import RuntimeConfig, load_action_head

    teacher = args.teacher or dataset.manifest["teacher"]["checkpoint"]
    recorded = dataset.manifest["teacher"].get("content_hash")
    if recorded and content_hash(read_checkpoint_files(teacher)) != recorded:
        raise ValueError(
            f"--teacher {teacher}: not the teacher whose features {dataset.root} holds (content hashes "
            "differ); the action objective needs that teacher's head"
        )
    on_cuda = torch.device(device).type == "cuda"
    head = load_action_head(  # on CUDA: bfloat16, the head's layers compiled (training: no CUDA graphs)
        teacher,
        device=str(device),
        dtype="bfloat16" if on_cuda else "float32",
        warmup=False,
        runtime=RuntimeConfig(compile="auto" if on_cuda else "off", cuda_graphs=False),
    )
    if head.feature_dim != dataset.feature_dim:
        raise ValueError(
            f"--teacher {teacher}: its head reads {head.feature_dim}-d features, {dataset.root} holds "
            f"{dataset.feature_dim}-d ones"
        )
    return ActionObjective(head, head.action_policy(args.embodiment), args.seed, samples=args.action_samples_per_step)
