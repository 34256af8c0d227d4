"""What the teacher's action head does with a student's features: action fidelity on held-out samples.

For each held-out sample the head makes chunks from the teacher's recorded features, from a predictor's
(the student, or a baseline) and from the mean-feature baseline's (features that ignore the frame), under
the same state (the embodiment's zero state in robot units) and the same noise, for several seeds. Per
predictor, the score that can fail: the action error ratio, ||chunk(predictor) - chunk(teacher)|| /
||chunk(mean feature) - chunk(teacher)|| over the embodiment's real steps and action dimensions (0: the
teacher's actions, 1: no better than ignoring the frame; mean and worst decile); and as context the cosine
of the normalised chunks, their relative L2 error and the largest error in robot units per action key
(cosine alone cannot fail: most of a chunk comes from the state, the noise and the embodiment). Each
sample runs alone (no padding), as the head runs at batch 1 on a robot.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..api import FeatureResult
from ..engine.actions import action_error_ratio


def chunk_of(policy, features: torch.Tensor, layout, seed: int) -> torch.Tensor:
    """(L, D) features -> the head's normalised chunk (H, A) under the zero state and ``seed``'s noise."""
    result = FeatureResult(features[None], torch.ones(1, features.shape[0]), [layout], torch.empty(0))
    return policy.normalised_chunk(result, policy.zero_state(), seed)


def chunk_pair(policy, reference: torch.Tensor, got: torch.Tensor, baseline: torch.Tensor) -> dict:
    """One sample, one seed: normalised chunks from the teacher's, a predictor's and the mean-feature
    baseline's features -> the error ratio, cosine, relative L2 and robot-unit errors."""
    robot_ref, robot_got = (policy.normalizer.split_actions(c.numpy(), policy.zero_state()) for c in (reference, got))
    return {
        "ratio": action_error_ratio(got, reference, baseline, policy.real_actions),
        "cosine": F.cosine_similarity(got.flatten(), reference.flatten(), dim=0).item(),
        "rel_l2": ((got - reference).norm() / reference.norm().clamp(min=1e-12)).item(),
        "max_abs_error": {key: float(np.abs(robot_got[key] - robot_ref[key]).max()) for key in robot_ref},
    }


def action_fidelity(
    policy, predictors: dict, baseline, dataset, indices, pad_id: int, seeds: list[int], device
) -> dict:
    """Each of ``predictors`` (name -> ``predict(batch) -> (B, L, D)`` in teacher units) scored through
    ``policy``'s head against the teacher's chunks, with ``baseline(batch)`` (the mean-feature predictor) as
    the ratio's yardstick; the teacher's and the yardstick's chunks are made once for all predictors.
    Returns name -> figures."""
    from .student_data import collate

    pairs: dict[str, list[dict]] = {name: [] for name in predictors}
    with torch.no_grad():
        for i in indices:
            sample = dataset[i]
            data = collate([sample], pad_id)
            teacher = sample["features"].float().to(device)  # (L, D)
            ignored = baseline(data).float().to(device)[0]  # (L, D)
            predicted = {
                name: None if predict is baseline else predict(data).float().to(device)[0]  # (L, D)
                for name, predict in predictors.items()
            }
            for seed in seeds:
                reference, yardstick = (chunk_of(policy, f, sample["layout"], seed) for f in (teacher, ignored))
                for name, features in predicted.items():
                    got = yardstick if features is None else chunk_of(policy, features, sample["layout"], seed)
                    pairs[name].append(chunk_pair(policy, reference, got, yardstick))
    return {name: summary(rows, len(indices), len(seeds)) for name, rows in pairs.items()}


def summary(pairs: list[dict], samples: int, seeds: int) -> dict:
    """One predictor's figures over its (sample, seed) pairs."""
    cosines, ratios = [p["cosine"] for p in pairs], [p["ratio"] for p in pairs]
    keys = pairs[0]["max_abs_error"].keys() if pairs else ()
    return {
        "action_error_ratio_mean": float(np.mean(ratios)),
        "action_error_ratio_worst_decile": float(np.percentile(ratios, 90)),
        "action_cosine_mean": float(np.mean(cosines)),
        "action_cosine_min": float(np.min(cosines)),
        "action_rel_l2_mean": float(np.mean([p["rel_l2"] for p in pairs])),
        "action_max_abs_error": {key: max(p["max_abs_error"][key] for p in pairs) for key in keys},
        "action_samples": samples,
        "action_seeds": seeds,
        "_action_cosines": cosines,
    }
