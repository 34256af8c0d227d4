"""A feature node as a process: ``--help``, signals, spinning, and a clean stop.

def main(args=None) -> int:
    return spin_node(TeacherNode, args)
"""

from __future__ import annotations

import signal
import sys
import threading
from dataclasses import fields

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from ..serving.node_config import ros_name


def print_help(node_cls) -> None:
    """``<node> --help``: what the node is and every parameter with its default (from the config dataclass)."""
    from .params import default_of

    module = sys.modules[node_cls.__module__]
    print(f"usage: {node_cls.executable} [--help] [--ros-args -p NAME:=VALUE ... | --params-file FILE]\n")
    print((module.__doc__ or "").strip().splitlines()[0] + "\n")
    print("parameters (read-only ones are fixed once the node is configured):")
    for f in fields(node_cls.config_cls):
        meta = f.metadata
        flags = " (read-only)" if meta.get("read_only") else ""
        limits = f"; one of {', '.join(meta['choices'])}" if meta.get("choices") else ""
        limits += f"; range {meta['range'][0]}..{meta['range'][1]}" if meta.get("range") else ""
        print(f"  {ros_name(f)} = {default_of(f)!r}{flags}\n      {meta.get('description', '')}{limits}")


def spin_node(node_cls, args=None) -> int:
    """Run one node until SIGINT, SIGTERM or an external shutdown, then stop its worker before the ROS
    context goes (so nothing publishes on a dead context), release its model and return 0. Returns 1 when
    ``autostart``'s configure or activate failed (its one error line is already logged)."""
    argv = sys.argv[1:] if args is None else list(args)
    own = argv[: argv.index("--ros-args")] if "--ros-args" in argv else argv
    if "--help" in own or "-h" in own:
        print_help(node_cls)
        return 0
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # rclpy's own handlers would shut the context down first, while the worker may be publishing.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = node_cls()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set() and not node.start_failed and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    finally:
        node.stop()
        node.release()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 1 if node.start_failed else 0
