"""What the launch files share: arguments that override the parameter files only when given, and a launch
that ends with exit code 1 when one of its nodes exits with an error (a failed configure, say).

A node's parameters come, in order, from the package's ``config/<node>.yaml``, then ``params_file:=`` (when
given), then the launch arguments given on the command line. A launch argument left out sets nothing, so
a value in ``params_file`` wins over every launch default.
"""

from __future__ import annotations

import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

# launch argument -> (node parameter, the text's type, what it is)
ARGUMENTS = {
    "checkpoint": ("checkpoint", str, "teacher checkpoint folder or cached Hugging Face repo id"),
    "student": ("student", str, "student.safetensors from groot-sage distill"),
    "device": ("device", str, "torch device string"),
    "dtype": ("dtype", str, "float16 | bfloat16 | float32"),
    "camera_topics": ("camera_topics", list, "camera topics in prompt order, as a YAML list"),
    "instruction": ("default_instruction", str, "default instruction until one arrives on the topic"),
    "use_sim_time": ("use_sim_time", bool, "use /clock (ros2 bag play --clock)"),
    "action_head": ("action_head.enabled", bool, "also run the flow-matching action head"),
    "embodiment_config": ("action_head.embodiment_config", str, "embodiment YAML for the action head"),
    "teacher_features_topic": ("teacher_features_topic", str, "teacher features to compare with, for live fidelity"),
}


def declare(*names: str) -> list[DeclareLaunchArgument]:
    """The launch arguments ``names``, plus ``namespace`` and ``params_file``; each empty unless given."""
    declared = [
        DeclareLaunchArgument(
            name, default_value="", description=f"{ARGUMENTS[name][2]} (default: the parameter files')"
        )
        for name in names
    ]
    declared.append(DeclareLaunchArgument("namespace", default_value="", description="namespace of the nodes"))
    declared.append(
        DeclareLaunchArgument(
            "params_file", default_value="", description="your parameter file, after the package's (default: none)"
        )
    )
    return declared


def parameters(context, config_file: str, names: tuple[str, ...], fixed: dict | None = None) -> list:
    """A node's parameter sources: the package's ``config_file``, ``params_file`` when given, then the
    arguments among ``names`` given on the command line (and ``fixed`` values)."""
    share = get_package_share_directory("groot_sage_ros")
    sources: list = [os.path.join(share, "config", config_file)]
    extra = LaunchConfiguration("params_file").perform(context)
    if extra:
        sources.append(extra)
    given = {}
    for name in names:
        text = LaunchConfiguration(name).perform(context)
        if text == "":
            continue
        parameter, kind, _ = ARGUMENTS[name]
        given[parameter] = text if kind is str else parse(name, text, kind)
    sources.append({**given, **(fixed or {})})
    return sources


def parse(name: str, text: str, kind: type):
    value = yaml.safe_load(text)
    if kind is list and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ValueError(f"launch argument {name}:={text!r}: expected a YAML list of strings")
    if kind is bool and not isinstance(value, bool):
        raise ValueError(f"launch argument {name}:={text!r}: expected true or false")
    return value


def fail_on_error(node) -> RegisterEventHandler:
    """When ``node`` exits with an error (its one error line is already in the log), the launch stops with
    exit code 1 instead of 0, so a script or a supervisor sees it."""

    def check(event, context):
        if event.returncode not in (0, None):
            raise RuntimeError(f"{event.action.name} exited with code {event.returncode}; see its error line above")

    return RegisterEventHandler(OnProcessExit(target_action=node, on_exit=check))


def feature_node(context, executable: str, config_file: str, names: tuple[str, ...], fixed: dict | None = None) -> Node:
    """One of the package's nodes, named after its executable, in the ``namespace`` argument."""
    return Node(
        package="groot_sage_ros",
        executable=executable,
        name=executable,
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=parameters(context, config_file, names, fixed),
    )


def single_node_launch(executable: str, config_file: str, names: tuple[str, ...]) -> LaunchDescription:
    """A launch of one node: its arguments ``names`` (plus namespace and params_file), the node, and exit
    code 1 when it fails."""

    def nodes(context) -> list:
        node = feature_node(context, executable, config_file, names)
        return [node, fail_on_error(node)]

    return LaunchDescription([*declare(*names), OpaqueFunction(function=nodes)])
