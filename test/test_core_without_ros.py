"""The core imports and runs with ROS blocked: a user's training box may have no ROS at all."""

import subprocess
import sys

BLOCKER = """
import sys
class BlockROS:
    BLOCKED = ("rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "trajectory_msgs", "lifecycle_msgs",
               "builtin_interfaces", "rosgraph_msgs", "cv_bridge")
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, BlockROS())
import groot_sage_ros, groot_sage_ros.api, groot_sage_ros.checkpoint, groot_sage_ros.families, groot_sage_ros.fastpath
import groot_sage_ros.engine, groot_sage_ros.student.engine, groot_sage_ros.serving.decoding, groot_sage_ros.cli
import groot_sage_ros.families.n1_5.fast, groot_sage_ros.families.n1_5.tiny, groot_sage_ros.offline.bags
try:
    import rclpy
except ImportError:
    pass
else:
    raise SystemExit("rclpy was not blocked")
from groot_sage_ros import load_engine
engine = load_engine(sys.argv[1], device="cpu", dtype="float32")
print(tuple(engine.extract([__import__("numpy").zeros((32, 32, 3), "uint8")], "go").features.shape))
"""


def test_core_imports_and_runs_with_rclpy_blocked(tiny_checkpoint):
    out = subprocess.run(
        [sys.executable, "-c", BLOCKER, str(tiny_checkpoint)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(1, 285, 64)"
