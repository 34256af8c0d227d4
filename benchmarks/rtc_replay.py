"""Real-time chunking replayed on the CPU: a simulated controller executes the chunks the node's schedule
would publish, under inference delays, with RTC off, prefix and guided.

Each control tick (``--rate`` Hz) a camera frame is taken; when the execution schedule says a chunk is due
(``serving/chunk_schedule.py``, the code groot_node runs), the action head computes it from that frame and
the robot's state at that tick, and it reaches the controller ``--delays`` milliseconds later, published
from its first step not yet due (its stamp is when that step is due). The controller commands, at each
tick, the newest trajectory's point due then (the previous one's until the new one starts). Reported per
mode and delay: the boundary jump (the largest change of a joint's command at a switch) p50/p99 and the
executed trajectory's jerk (third difference over the period cubed) RMS and p99. The tiny checkpoint's
random weights make every chunk rough; the figures compare modes and delays, not a trained robot.

    python benchmarks/rtc_replay.py --out benchmarks/rtc_replay.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np


def replay(policy, engine, mode: str, delay_ms: float, ticks: int, rate: float, execution_horizon: int, seed: int):
    from groot_sage_ros.serving.chunk_schedule import ChunkSchedule

    period_ns = int(round(1e9 / rate))
    delay = math.ceil(round(delay_ms * 1e6 / period_ns, 6))
    horizon = max(execution_horizon, delay + 1)  # a chunk must outlast its own delay
    mode, _, steps = mode.partition(":")  # "guided:N": the first N denoising steps through the Jacobian, -1: all
    schedule = ChunkSchedule(rate, horizon, fixed_delay=delay, guided_steps=int(steps or 1))
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(8)]
    state = policy.zero_state()
    widths = {key.name: key.width for key in policy.normalizer.action_keys}
    in_flight = []  # (arrival tick, first due tick, (n, J) published points)
    received = []  # (first due tick, points), in arrival order: the controller's trajectories
    executed, jumps, switches, commanding = [], [], [], None
    for tick in range(ticks):
        stamp = tick * period_ns
        if schedule.is_due(stamp, schedule.delay_steps(engine.action_horizon)):
            result = engine.extract([frames[tick % len(frames)]], "stack the blocks")
            planned = schedule.plan(policy, result, state, stamp, tick, mode)
            positions = np.concatenate([planned.actions[k] for k in widths], axis=1)  # (H', J)
            in_flight.append((tick + delay, tick + 1 + planned.delay, positions[planned.delay :]))
            schedule.commit(stamp, planned, positions, state, stamp + int(delay_ms * 1e6))
        received += [(due, points) for arrival, due, points in in_flight if arrival <= tick]
        in_flight = [item for item in in_flight if item[0] > tick]
        # splice by time: the newest trajectory that has started and still has a point due now
        current = next(((d, p) for d, p in reversed(received) if d <= tick < d + len(p)), None)
        if current is not None and commanding is not None and current[0] != commanding[0]:
            previous_due, previous = commanding
            if tick - previous_due < len(previous):
                jumps.append(float(np.abs(current[1][tick - current[0]] - previous[tick - previous_due]).max()))
                switches.append(tick)
        if current is not None:
            commanding = current
            command = current[1][tick - current[0]]
        else:  # nothing due: hold the last command
            command = executed[-1] if executed else np.zeros(sum(widths.values()))
        executed.append(command)
        start = 0
        for key, width in widths.items():  # the robot follows its commands: the state is the last command
            if key in state:
                state[key] = np.asarray(command[start : start + width])
            start += width
    positions = np.array(executed)  # (T, J)
    jerk = np.abs(np.diff(positions, n=3, axis=0)).max(axis=1) * rate**3  # (T - 3,)
    near = [jerk[max(0, t - 3) : t + 1].max() for t in switches if t < len(jerk) + 3]
    return {
        "delay_steps": delay,
        "execution_horizon": horizon,
        "switches": len(jumps),
        "boundary_jump_p50": float(np.percentile(jumps, 50)) if jumps else None,
        "boundary_jump_p99": float(np.percentile(jumps, 99)) if jumps else None,
        "jerk_rms": float(np.sqrt(np.mean(jerk**2))),
        "jerk_p99": float(np.percentile(jerk, 99)),
        "jerk_at_switches_p50": float(np.percentile(near, 50)) if near else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint", help="a teacher checkpoint (default: the tiny N1.5 one, written to a temp folder)"
    )
    parser.add_argument("--embodiment", default=None, help="embodiment tag (default: the checkpoint's only one)")
    parser.add_argument("--delays", type=float, nargs="+", default=[0, 100, 200, 400], help="milliseconds")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["off", "prefix", "guided:1", "guided:-1", "guided:0"],
        help="off, prefix, guided:N (the first N denoising steps corrected through the head's Jacobian, the "
        "rest through the identity; -1: all) (default: these five)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="simulated time per run (default: 10)")
    parser.add_argument("--rate", type=float, default=30.0, help="control rate, Hz (default: 30)")
    parser.add_argument(
        "--execution-horizon", type=int, default=8, help="steps per chunk, at least the delay + 1 (default: 8)"
    )
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    from groot_sage_ros.engine import load_engine
    from groot_sage_ros.families import DEFAULT_FAMILY, by_name

    checkpoint = args.checkpoint or by_name(DEFAULT_FAMILY).write_tiny(Path(tempfile.mkdtemp()) / "tiny")
    engine = load_engine(checkpoint, device="cpu", dtype="float32", action_head=True)
    policy = engine.action_policy(args.embodiment)
    runs = {}
    for delay in args.delays:
        for mode in args.modes:
            ticks = int(args.seconds * args.rate)
            runs[f"{mode}_{delay:g}ms"] = replay(
                policy, engine, mode, delay, ticks, args.rate, args.execution_horizon, 0
            )
            print(f"{mode:>7} {delay:>5g} ms: {runs[f'{mode}_{delay:g}ms']}", file=sys.stderr)
    report = {
        "checkpoint": str(checkpoint) if args.checkpoint else "tiny N1.5 (random weights)",
        "rate_hz": args.rate,
        "execution_horizon": args.execution_horizon,
        "runs": runs,
        "command": "python benchmarks/rtc_replay.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
