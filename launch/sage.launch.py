"""Start the SAGE student alone, with config/sage.yaml and a few overrides.

ros2 launch groot_sage_ros sage.launch.py student:=/models/student.safetensors camera_topics:="['/front/image_raw']"
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

ARGUMENTS = {
    "student": ("", "student.safetensors from groot-sage distill"),
    "device": ("cuda", "torch device string"),
    "dtype": ("float16", "float16 | bfloat16 | float32"),
    "camera_topics": ("['camera/image_raw']", "camera topics in prompt order, as a YAML list"),
    "instruction": ("Perform the default behavior.", "default instruction until one arrives on the topic"),
    "namespace": ("", "namespace of the node and its topics"),
    "use_sim_time": ("false", "use /clock (ros2 bag play --clock)"),
    "teacher_features_topic": ("", "teacher features to compare with, for live fidelity"),
}


def student_node(arg, params_file) -> Node:
    overrides = {
        "student": arg("student"),
        "device": arg("device"),
        "dtype": arg("dtype"),
        "camera_topics": ParameterValue(arg("camera_topics"), value_type=list[str]),
        "default_instruction": arg("instruction"),
        "use_sim_time": ParameterValue(arg("use_sim_time"), value_type=bool),
        "teacher_features_topic": arg("teacher_features_topic"),
    }
    return Node(
        package="groot_sage_ros",
        executable="sage_node",
        name="sage_node",
        namespace=arg("namespace"),
        output="screen",
        parameters=[params_file, overrides],
    )


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("groot_sage_ros")
    declared = [
        DeclareLaunchArgument(name, default_value=value, description=text) for name, (value, text) in ARGUMENTS.items()
    ]
    declared.append(
        DeclareLaunchArgument(
            "params_file", default_value=os.path.join(share, "config", "sage.yaml"), description="parameter file"
        )
    )
    return LaunchDescription([*declared, student_node(LaunchConfiguration, LaunchConfiguration("params_file"))])
