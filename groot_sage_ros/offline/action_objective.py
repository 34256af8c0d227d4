"""``distill --action-weight``: training the student through the teacher's frozen action head."""

from __future__ import annotations

import sys

import torch

from ..fastpath.cuda_graphs import GraphCache

# The head's context is zero-padded to a multiple of CONTEXT_BUCKET tokens, so that a few CUDA graphs serve every
# batch: at most 7 pads beyond the batch's longest sample (N1.5's head attends to pads, as its reference does to a
# batch's). GRAPHS caps the graphs kept (each holds its inputs, ~160 MB at batch 32 and 300 tokens); shapes
# beyond it run uncaptured.
CONTEXT_BUCKET = 8
GRAPHS = 16


class ActionObjective:
    """The student's features through the teacher's frozen action head: at sampled flow-matching times, noisy
    actions and states, the head's velocity from the student's features is matched to its velocity from the
    teacher's (MSE over the embodiment's real action dimensions). Pads are zero for both, so the head sees
    the same context length, padded on to a multiple of ``CONTEXT_BUCKET`` tokens (N1.7's head masks pads
    out, N1.5's attends to them, as its reference does to a batch's pads); each rank samples from
    (seed, step), so a resumed run draws the same.

    ``fast`` (the default) runs the head's fast-path layers (fused projections; compiled on CUDA, where the
    head is loaded in bfloat16) and takes the loss and its gradient in the features in one call (the
    teacher's velocity without gradient, the student's, the error, the backward pass to the features: the
    head's weights are frozen), handed to the step's backward pass as a precomputed gradient. With
    ``graphs`` (CUDA) that call is a CUDA graph per batch shape, so the head's hundreds of kernels, forward
    and backward, launch at once. The reference (``fast=False``) runs the modules as built under autograd;
    a test compares the two paths' losses and gradients.

    ``samples`` (0: all) takes the action term on the first ``samples`` of each batch only (the batch order
    is already shuffled): the head's arithmetic falls in proportion."""

    def __init__(self, head, policy, seed: int, fast: bool = True, samples: int = 0, graphs: bool = False):
        self.head, self.seed, self.fast, self.samples = head, seed, fast, samples
        if fast:
            head.use_fast_layers()
        self.embodiment_id = policy.normalizer.embodiment_id
        self.action_width = sum(key.width for key in policy.normalizer.action_keys)
        self.state_width = sum(key.width for key in policy.normalizer.state_keys)
        self.graphs = GraphCache(self.loss_and_gradient, head.device, limit=GRAPHS) if graphs and fast else None

    def loss(
        self, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, image_mask: torch.Tensor, step: int
    ) -> torch.Tensor:
        """student, teacher (B, L, D) in teacher units, mask (B, L) real tokens, image_mask (B, L) -> scalar."""
        if self.samples:  # the first rows: (S, L, D), (S, L)
            student, teacher, mask, image_mask = (x[: self.samples] for x in (student, teacher, mask, image_mask))
        student, teacher, mask, image_mask = pad_context(CONTEXT_BUCKET, student, teacher, mask, image_mask)
        draws = self.draws(student.shape[0], student.device, step)
        if not self.fast:
            return self.velocity_error(student, teacher, mask, image_mask, *draws)
        inputs = (student.detach(), teacher, mask, image_mask, *draws)
        if self.graphs is None:
            value, gradient = self.loss_and_gradient(*inputs)
        else:
            try:
                value, gradient = self.graphs(*inputs)
            except RuntimeError as err:  # a capture this PyTorch refuses: the same call, uncaptured
                print(f"distill: the action objective runs without CUDA graphs ({err})", file=sys.stderr)
                self.graphs = None
                value, gradient = self.loss_and_gradient(*inputs)
        return PrecomputedGradient.apply(student, value, gradient)

    def draws(self, batch: int, device: torch.device, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step's noisy actions (B, H, A), flow-matching times (B,) and states (B, S), drawn on the step's
        device: a copy from host memory would wait for the GPU to finish the queued work mid-step."""
        generator = torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + step)
        t = torch.rand(batch, generator=generator, device=device)  # (B,)
        noise_shape = (batch, self.head.action_horizon, self.head.action_dim)
        actions = torch.randn(noise_shape, generator=generator, device=device)  # (B, H, A)
        states = torch.zeros(batch, self.head.state_width, device=device)  # (B, S): the embodiment's part drawn
        states[:, : self.state_width] = torch.rand(batch, self.state_width, generator=generator, device=device) * 2 - 1
        return actions, t, states

    def velocity_error(self, student, teacher, mask, image_mask, actions, t, states) -> torch.Tensor:
        """MSE between the head's velocities (B, H, A) from the student's and the teacher's features; the
        teacher's side without gradient."""
        keep = mask.unsqueeze(-1).to(student.dtype)  # (B, L, 1)
        args = (mask, image_mask, actions, t, states, self.embodiment_id, self.fast)
        with torch.no_grad():
            target = self.head.action_velocity(teacher * keep, *args)
        got = self.head.action_velocity(student * keep, *args)  # (B, H, A)
        return ((got.float() - target.float())[..., : self.action_width] ** 2).mean()

    def loss_and_gradient(self, student, *rest) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss and its gradient in ``student`` (B, L, D): the function the graphs replay."""
        with torch.enable_grad():
            features = student.detach().requires_grad_(True)
            value = self.velocity_error(features, *rest)
            (gradient,) = torch.autograd.grad(value, features)
        return value.detach(), gradient


def pad_context(bucket: int, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """(B, L, ...) tensors zero-padded (False for masks) along L to the next multiple of ``bucket``."""
    extra = -tensors[0].shape[1] % bucket
    if not extra:
        return list(tensors)
    return [torch.cat([t, t.new_zeros((t.shape[0], extra, *t.shape[2:]))], dim=1) for t in tensors]


class PrecomputedGradient(torch.autograd.Function):
    """``value`` as a function of ``x`` whose gradient was computed with it: d value / d x = ``gradient``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, value: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gradient)
        return value.clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (gradient,) = ctx.saved_tensors
        return gradient * grad_output, None, None


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
    head = load_action_head(  # on CUDA: bfloat16, the head's layers compiled (the objective graphs its calls)
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
    policy = head.action_policy(args.embodiment)
    return ActionObjective(head, policy, args.seed, samples=args.action_samples_per_step, graphs=on_cuda)
