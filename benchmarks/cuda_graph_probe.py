"""Two facts about the full-size backbone on the GPU, measured in one run:

1. the model call has no host synchronisation (``torch.cuda.set_sync_debug_mode("error")`` raises on any);
2. batch-1 latency of the eager call against a CUDA-graph replay of the same call (a first step of the
   speed work), with the replay's features checked against eager.

    python benchmarks/cuda_graph_probe.py --out probe.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from groot_sage_ros.config import n15_3b_config
from groot_sage_ros.engine import FeatureExtractor


def timed(fn, iters=50):
    times = []
    for _ in range(iters):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    args = parser.parse_args()
    extractor = FeatureExtractor.from_random(n15_3b_config(), device="cuda", dtype="float16")
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    report = {}
    for batch in (1, 4):
        inputs = extractor.prepare([([image], "pick up the red cube")] * batch)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            extractor.forward(inputs)
            report[f"no_host_sync_batch{batch}"] = True
        except RuntimeError as err:
            report[f"no_host_sync_batch{batch}"] = f"sync: {err}"
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
    inputs = extractor.prepare([([image], "pick up the red cube")])
    backbone = extractor.model.backbone
    ids, pixels, mask = inputs.input_ids, inputs.pixel_values.to(torch.float16), inputs.attention_mask
    with torch.inference_mode():
        eager = backbone(ids, pixels, mask).features.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                backbone(ids, pixels, mask)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static = backbone(ids, pixels, mask).features
        graph.replay()
        torch.cuda.synchronize()
        report["graph_vs_eager_max_abs_diff"] = (static - eager).abs().max().item()
        report["eager_backbone_ms_median"] = timed(lambda: backbone(ids, pixels, mask))
        report["graph_backbone_ms_median"] = timed(graph.replay)
    report["tokens"] = int(ids.shape[1])
    report["device"], report["torch"] = torch.cuda.get_device_name(), torch.__version__
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
