"""What the teacher's action head does with a student's features: action fidelity on held-out samples.

For each held-out sample the head makes chunks from the teacher's recorded features and from a predictor's
(the student, or a baseline), under the same state (the embodiment's zero state in robot units) and the
same noise, for several seeds. Per predictor: the cosine of the normalised chunks (flattened), their
relative L2 error, and the largest error in robot units per action key. Each sample runs alone (no
padding), as the head runs at batch 1 on a robot.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..api import FeatureResult


def chunk_pair(policy, teacher: torch.Tensor, predicted: torch.Tensor, layout, seed: int) -> dict:
    """One sample, one seed: (L, D) teacher and predicted features -> cosine, relative L2, robot-unit errors."""
    chunks = []
    for features in (teacher, predicted):
        result = FeatureResult(features[None], torch.ones(1, features.shape[0]), [layout], torch.empty(0))
        chunks.append(policy.normalised_chunk(result, policy.zero_state(), seed))
    reference, got = chunks  # (H, A) normalised
    robot_ref, robot_got = (policy.normalizer.split_actions(c.numpy(), policy.zero_state()) for c in chunks)
    return {
        "cosine": F.cosine_similarity(got.flatten(), reference.flatten(), dim=0).item(),
        "rel_l2": ((got - reference).norm() / reference.norm().clamp(min=1e-12)).item(),
        "max_abs_error": {key: float(np.abs(robot_got[key] - robot_ref[key]).max()) for key in robot_ref},
    }


def action_fidelity(head, policy, predict, dataset, indices, pad_id: int, seeds: list[int], device) -> dict:
    """``predict(batch) -> (B, L, D)`` in teacher units, scored through ``head`` against the teacher's chunks."""
    from .student_data import collate

    pairs = []
    with torch.no_grad():
        for i in indices:
            sample = dataset[i]
            data = collate([sample], pad_id)
            predicted = predict(data).float().to(device)[0]  # (L, D)
            teacher = sample["features"].float().to(device)  # (L, D)
            pairs += [chunk_pair(policy, teacher, predicted, sample["layout"], seed) for seed in seeds]
    cosines = [p["cosine"] for p in pairs]
    keys = pairs[0]["max_abs_error"].keys() if pairs else ()
    return {
        "action_cosine_mean": float(np.mean(cosines)),
        "action_cosine_min": float(np.min(cosines)),
        "action_rel_l2_mean": float(np.mean([p["rel_l2"] for p in pairs])),
        "action_max_abs_error": {key: max(p["max_abs_error"][key] for p in pairs) for key in keys},
        "action_samples": len(indices),
        "action_seeds": len(seeds),
        "_action_cosines": cosines,
    }
