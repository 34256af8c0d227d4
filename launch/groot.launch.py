"""Start groot_node with config/groot.yaml and a few overrides.

    ros2 launch groot_sage_ros groot.launch.py checkpoint:=/models/GR00T-N1.5-3B \
        camera_topics:="['/front/image_raw', '/wrist/image_raw/compressed']" instruction:="pick up the cube"
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

ARGUMENTS = {
    "checkpoint": ("nvidia/GR00T-N1.5-3B", "checkpoint folder or cached Hugging Face repo id"),
    "device": ("cuda", "torch device string"),
    "dtype": ("float16", "float16 | bfloat16 | float32"),
    "camera_topics": ("['camera/image_raw']", "camera topics in prompt order, as a YAML list"),
    "instruction": ("Perform the default behavior.", "default instruction until one arrives on the topic"),
    "namespace": ("", "namespace of the node and its topics"),
    "use_sim_time": ("false", "use /clock (ros2 bag play --clock)"),
    "action_head": ("false", "also run the flow-matching action head (chunks on ~/action_chunk/dry_run)"),
}


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("groot_sage_ros")
    default_params = os.path.join(share, "config", "groot.yaml")
    arg = LaunchConfiguration
    overrides = {
        "checkpoint": arg("checkpoint"),
        "device": arg("device"),
        "dtype": arg("dtype"),
        "camera_topics": ParameterValue(arg("camera_topics"), value_type=list[str]),
        "default_instruction": arg("instruction"),
        "use_sim_time": ParameterValue(arg("use_sim_time"), value_type=bool),
        "action_head.enabled": ParameterValue(arg("action_head"), value_type=bool),
        "action_head.embodiment_config": arg("embodiment_config"),
    }
    node = Node(
        package="groot_sage_ros",
        executable="groot_node",
        name="groot_node",
        namespace=arg("namespace"),
        output="screen",
        parameters=[arg("params_file"), overrides],
    )
    declared = [
        DeclareLaunchArgument(name, default_value=value, description=text) for name, (value, text) in ARGUMENTS.items()
    ]
    declared.append(DeclareLaunchArgument("params_file", default_value=default_params, description="parameter file"))
    declared.append(
        DeclareLaunchArgument(
            "embodiment_config",
            default_value=os.path.join(share, "config", "embodiments", "so100.yaml"),
            description="embodiment YAML for the action head",
        )
    )
    return LaunchDescription([*declared, node])
