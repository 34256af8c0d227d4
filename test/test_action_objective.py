"""distill's action objective: the fast path (the head's fused fast-path layers, as on the GPU where they are
also compiled and in bfloat16) gives the reference implementation's loss and gradients, step after step."""

import pytest
import torch

from groot_sage_ros.engine import RuntimeConfig, load_action_head
from groot_sage_ros.fastpath.fusion import FusedLinear
from groot_sage_ros.offline.action_objective import CONTEXT_BUCKET, ActionObjective, pad_context


@pytest.fixture(scope="module")
def heads(tiny_checkpoint, tmp_path_factory):
    from groot_sage_ros.families.n1_7.tiny import write_tiny_checkpoint

    n17 = write_tiny_checkpoint(tmp_path_factory.mktemp("objective_n17") / "checkpoint")
    runtime = RuntimeConfig(compile="off", cuda_graphs=False)
    return {
        family: load_action_head(path, device="cpu", dtype="float32", warmup=False, runtime=runtime)
        for family, path in (("gr00t_n1_5", tiny_checkpoint), ("gr00t_n1_7", n17))
    }


def batch(head, seed: int):
    """Three samples of 9, 12 and 7 real tokens (right-padded), image tokens first in each."""
    generator = torch.Generator().manual_seed(seed)
    lengths, width = (9, 12, 7), head.feature_dim
    mask = torch.zeros(3, 12, dtype=torch.bool)
    image_mask = torch.zeros(3, 12, dtype=torch.bool)
    for row, length in enumerate(lengths):
        mask[row, :length] = True
        image_mask[row, : length // 2] = True
    teacher = torch.randn(3, 12, width, generator=generator)
    student = teacher + 0.3 * torch.randn(3, 12, width, generator=generator)
    return student, teacher, mask, image_mask


@pytest.mark.parametrize("family", ["gr00t_n1_5", "gr00t_n1_7"])
def test_fast_objective_matches_the_reference_gradients_and_loss_curve(heads, family):
    head = heads[family]
    policy = head.action_policy(None)
    reference = ActionObjective(head, policy, seed=3, fast=False)
    fast = ActionObjective(head, policy, seed=3, fast=True)
    fused_calls = []
    fused = [m for m in head.model.fast.modules() if isinstance(m, FusedLinear)]  # only the fast path has these
    hooks = [m.register_forward_hook(lambda *_: fused_calls.append(1)) for m in fused]
    student, teacher, mask, image_mask = batch(head, 0)
    grads, losses = {}, {}
    for name, objective in (("reference", reference), ("fast", fast)):
        features = student.clone().requires_grad_(True)
        loss = objective.loss(features, teacher, mask, image_mask, step=5)
        loss.backward()
        grads[name], losses[name] = features.grad, loss.detach()
        if name == "reference":
            assert not fused_calls  # the reference path runs the modules as built
    for hook in hooks:
        hook.remove()
    assert fused_calls  # the fast path ran the fused layers
    assert losses["reference"] > 0 and grads["reference"].abs().sum() > 0
    torch.testing.assert_close(losses["fast"], losses["reference"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grads["fast"], grads["reference"], rtol=1e-4, atol=1e-7)
    # the loss curve: a few optimiser steps on the same features from the same start, one per objective
    curves = {}
    for name, objective in (("reference", reference), ("fast", fast)):
        features = student.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([features], lr=1e-2)
        curve = []
        for step in range(6):
            optimiser.zero_grad()
            loss = objective.loss(features, teacher, mask, image_mask, step)
            loss.backward()
            optimiser.step()
            curve.append(loss.item())
        curves[name] = curve
    assert curves["reference"][-1] < curves["reference"][0]
    torch.testing.assert_close(torch.tensor(curves["fast"]), torch.tensor(curves["reference"]), rtol=1e-4, atol=1e-7)


def test_the_action_term_on_part_of_each_batch_is_that_part_s_term(heads):
    """--action-samples-per-step 2: the loss (and the gradient it gives) of the batch's first two samples
    alone; the third sample's features get no action gradient."""
    head = heads["gr00t_n1_5"]
    policy = head.action_policy(None)
    student, teacher, mask, image_mask = batch(head, 1)
    part = ActionObjective(head, policy, seed=3, samples=2)
    whole = ActionObjective(head, policy, seed=3)
    features = student.clone().requires_grad_(True)
    loss = part.loss(features, teacher, mask, image_mask, step=7)
    loss.backward()
    alone = whole.loss(student[:2], teacher[:2], mask[:2], image_mask[:2], step=7)
    torch.testing.assert_close(loss.detach(), alone.detach())
    assert features.grad[:2].abs().sum() > 0 and features.grad[2].abs().sum() == 0
    assert not torch.isclose(whole.loss(student, teacher, mask, image_mask, step=7), alone, rtol=1e-3, atol=0)


def test_pads_past_the_context_bucket_leave_n17_s_objective_unchanged(heads):
    """The objective pads the context to a multiple of CONTEXT_BUCKET tokens (so that a few CUDA graphs serve
    every batch); N1.7's head masks pads out, so more pads give the same loss and gradient."""
    head = heads["gr00t_n1_7"]
    objective = ActionObjective(head, head.action_policy(None), seed=3)
    student, teacher, mask, image_mask = batch(head, 2)
    padded = pad_context(2 * CONTEXT_BUCKET - 5, student, teacher, mask, image_mask)  # 12 -> 22 tokens
    assert padded[0].shape[1] == 22  # the objective pads it on to 24, the unpadded batch to 16
    assert not padded[2][:, 12:].any() and not padded[0][:, 12:].any()
    grads, losses = [], []
    for features, rest in ((student, (teacher, mask, image_mask)), (padded[0], padded[1:])):
        features = features.clone().requires_grad_(True)
        loss = objective.loss(features, *rest, step=4)
        loss.backward()
        grads.append(features.grad[:, :12])
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-7)
