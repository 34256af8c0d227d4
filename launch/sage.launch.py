"""Start the SAGE student alone, with config/sage.yaml, then params_file, then the arguments given.

    ros2 launch groot_sage_ros sage.launch.py student:=/models/student.safetensors camera_topics:="['/front/image_raw']"

A value in params_file wins over every argument left out; the launch exits 1 when the node fails to start.
"""

from launch.actions import OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from groot_sage_ros.launch_support import declare, fail_on_error, parameters
from launch import LaunchDescription

NAMES = ("student", "device", "dtype", "camera_topics", "instruction", "use_sim_time", "teacher_features_topic")


def nodes(context) -> list:
    node = Node(
        package="groot_sage_ros",
        executable="sage_node",
        name="sage_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=parameters(context, "sage.yaml", NAMES),
    )
    return [node, fail_on_error(node)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([*declare(*NAMES), OpaqueFunction(function=nodes)])
