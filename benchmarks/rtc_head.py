"""The action head's time with real-time chunking off, prefix and guided, batch 1, for each family: random
weights in the released shapes on the GPU (``random_engine``), the fast path (compiled regions, CUDA
graphs; guided's graphs hold a backward pass through the head at each guided denoising step), and guided
with only the first 2 or 1 of the 4 steps guided.

    python benchmarks/rtc_head.py --out benchmarks/rtc_head_h100.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=["gr00t_n1_5", "gr00t_n1_7"])
    parser.add_argument("--iters", type=int, default=30, help="timed calls per mode (default: 30)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    import numpy as np
    import torch

    from groot_sage_ros.api import ChunkPrefix
    from groot_sage_ros.engine import random_engine

    report = {"gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu", "families": {}}
    for family in args.families:
        engine = random_engine(family, device=args.device, dtype="float16", action_head=True)
        result = engine.extract([np.full((480, 640, 3), 127, dtype=np.uint8)], "pick up the cube")
        state = torch.zeros(1, engine.state_width)
        previous = engine.predict_actions(result, state, 0, seed=0)[0].float().cpu()
        horizon = previous.shape[0]
        continued = torch.zeros_like(previous)
        continued[: horizon - 4] = previous[4:]
        modes = {
            "off": None,
            "prefix": ChunkPrefix(continued, 3, horizon - 4, "prefix"),
            "guided": ChunkPrefix(continued, 3, horizon - 4, "guided"),  # every step through the Jacobian
            "guided_first_2_steps": ChunkPrefix(continued, 3, horizon - 4, "guided", guided_steps=2),
            "guided_first_step": ChunkPrefix(continued, 3, horizon - 4, "guided", guided_steps=1),  # the default
            "guided_identity": ChunkPrefix(continued, 3, horizon - 4, "guided", guided_steps=0),
        }
        times = {}
        for name, prefix in modes.items():
            for _ in range(3):  # warm-up: graphs, and guided's backward compile
                engine.predict_actions(result, state, 0, seed=1, prefix=prefix)
            torch.cuda.synchronize()
            samples = []
            for _ in range(args.iters):
                tick = time.perf_counter()
                engine.predict_actions(result, state, 0, seed=1, prefix=prefix)
                torch.cuda.synchronize()
                samples.append((time.perf_counter() - tick) * 1e3)
            times[f"{name}_ms_median"] = float(np.median(samples))
        for name in list(modes)[1:]:
            times[f"{name}_over_off"] = times[f"{name}_ms_median"] / times["off_ms_median"]
        # the graphed guided chunk against the same call on the plain PyTorch path (the same arithmetic)
        graphed = engine.predict_actions(result, state, 0, seed=1, prefix=modes["guided"]).float()
        plain = engine.predict_actions(result, state, 0, seed=1, prefix=modes["guided"], reference=True).float()
        times["guided_graph_vs_reference_rel_l2"] = float((graphed - plain).norm() / plain.norm())
        report["families"][family] = times
        print(family, times, file=sys.stderr)
        del engine
        torch.cuda.empty_cache()
    report["command"] = "python benchmarks/rtc_head.py " + " ".join(sys.argv[1:])
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
