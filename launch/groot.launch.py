"""Start groot_node with config/groot.yaml, then params_file, then the arguments given.

    ros2 launch groot_sage_ros groot.launch.py checkpoint:=/models/GR00T-N1.5-3B \
        camera_topics:="['/front/image_raw', '/wrist/image_raw/compressed']" instruction:="pick up the cube"

A value in params_file wins over every argument left out; the launch exits 1 when the node fails to start.
"""

from groot_sage_ros.launch_support import single_node_launch
from launch import LaunchDescription

ARGUMENTS = (
    "checkpoint",
    "device",
    "dtype",
    "camera_topics",
    "instruction",
    "use_sim_time",
    "action_head",
    "embodiment_config",
)


def generate_launch_description() -> LaunchDescription:
    return single_node_launch("groot_node", "groot.yaml", ARGUMENTS)
