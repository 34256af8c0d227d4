"""Start groot_node with config/groot.yaml, then params_file, then the arguments given.

    ros2 launch groot_sage_ros groot.launch.py checkpoint:=/models/GR00T-N1.5-3B \
        camera_topics:="['/front/image_raw', '/wrist/image_raw/compressed']" instruction:="pick up the cube"

A value in params_file wins over every argument left out; the launch exits 1 when the node fails to start.
"""

from launch.actions import OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from groot_sage_ros.launch_support import declare, fail_on_error, parameters
from launch import LaunchDescription

NAMES = ("checkpoint", "device", "dtype", "camera_topics", "instruction", "use_sim_time", "action_head",
         "embodiment_config")  # fmt: skip


def nodes(context) -> list:
    node = Node(
        package="groot_sage_ros",
        executable="groot_node",
        name="groot_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=parameters(context, "groot.yaml", NAMES),
    )
    return [node, fail_on_error(node)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([*declare(*NAMES), OpaqueFunction(function=nodes)])
