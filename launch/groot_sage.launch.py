"""Teacher and student side by side on the same cameras; the student reports live fidelity to the teacher.

    ros2 launch groot_sage_ros groot_sage.launch.py checkpoint:=nvidia/GR00T-N1.5-3B \
        student:=/models/student.safetensors

Parameters come from the package's config/groot.yaml and config/sage.yaml, then ``params_file`` (one file
for both nodes: keys under ``/**`` or a node's name), then the launch arguments, which win.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

ARGUMENTS = {
    "checkpoint": ("nvidia/GR00T-N1.5-3B", "teacher checkpoint folder or cached Hugging Face repo id"),
    "student": ("", "student.safetensors from groot-sage distill"),
    "device": ("cuda", "torch device string, both nodes"),
    "dtype": ("float16", "float16 | bfloat16 | float32, both nodes"),
    "camera_topics": ("['camera/image_raw']", "camera topics in prompt order, as a YAML list"),
    "instruction": ("Perform the default behavior.", "default instruction until one arrives on the topic"),
    "namespace": ("", "namespace of both nodes"),
    "use_sim_time": ("false", "use /clock (ros2 bag play --clock)"),
    "params_file": ("", "a parameter file for both nodes, after the package's YAMLs (empty: none)"),
}


def nodes(context) -> list[Node]:
    share = get_package_share_directory("groot_sage_ros")
    arg = LaunchConfiguration
    extra = arg("params_file").perform(context)
    extra_files = [extra] if extra else []
    common = {
        "device": arg("device"),
        "dtype": arg("dtype"),
        "camera_topics": ParameterValue(arg("camera_topics"), value_type=list[str]),
        "default_instruction": arg("instruction"),
        "use_sim_time": ParameterValue(arg("use_sim_time"), value_type=bool),
    }
    teacher = Node(
        package="groot_sage_ros",
        executable="groot_node",
        name="groot_node",
        namespace=arg("namespace"),
        output="screen",
        parameters=[
            os.path.join(share, "config", "groot.yaml"),
            *extra_files,
            {**common, "checkpoint": arg("checkpoint")},
        ],
    )
    student = Node(
        package="groot_sage_ros",
        executable="sage_node",
        name="sage_node",
        namespace=arg("namespace"),
        output="screen",
        parameters=[
            os.path.join(share, "config", "sage.yaml"),
            *extra_files,
            {**common, "student": arg("student"), "teacher_features_topic": "groot_node/features"},
        ],
    )
    return [teacher, student]


def generate_launch_description() -> LaunchDescription:
    declared = [
        DeclareLaunchArgument(name, default_value=value, description=text) for name, (value, text) in ARGUMENTS.items()
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=nodes)])
