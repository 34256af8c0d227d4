"""Where the action head's GPU time goes at batch 1: the top CUDA kernels of one compiled 4-step chunk
(graphs off, so the profiler sees each kernel), and the graphed chunk's median.

    python benchmarks/profile_head.py --out head_profile.txt
"""

from __future__ import annotations

import argparse

import torch
from profile_backbone import kernel_table, save  # benchmarks/ is the script's folder, so on sys.path

from groot_sage_ros.bench import frame_sets, timed
from groot_sage_ros.config import RuntimeConfig, n15_3b_config
from groot_sage_ros.engine import FeatureExtractor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    lines = []
    for graphs in (False, True):
        extractor = FeatureExtractor.from_random(n15_3b_config(), device="cuda", dtype="float16", action_head=True,
                                                 runtime=RuntimeConfig(compile="on", cuda_graphs=graphs))  # fmt: skip
        result = extractor.forward(extractor.prepare(frame_sets(1, 1)))
        states = torch.zeros(1, extractor.config.action_head.max_state_dim)
        chunk = lambda: extractor.predict_actions(result, states, 0, seed=0)  # noqa: E731
        report = timed("head", chunk, 30, 5, extractor.device)
        lines.append(f"graphs={graphs}: head median {report['head_ms_median']:.3f} ms")
        if not graphs:
            lines.append(kernel_table(chunk, rows=30))
        del extractor
        torch.cuda.empty_cache()
    save(lines, args.out)


if __name__ == "__main__":
    main()
