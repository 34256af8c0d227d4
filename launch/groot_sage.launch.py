"""Teacher and student side by side on the same cameras; the student reports live fidelity to the teacher.

    ros2 launch groot_sage_ros groot_sage.launch.py checkpoint:=nvidia/GR00T-N1.5-3B \
        student:=/models/student.safetensors

Parameters come from the package's config/groot.yaml and config/sage.yaml, then ``params_file`` (one file
for both nodes: keys under ``/**`` or a node's name), then the launch arguments given (``device``, ``dtype``,
``camera_topics``, ``instruction`` and ``use_sim_time`` apply to both nodes). A value in params_file wins
over every argument left out; the launch exits 1 when a node fails to start.
"""

from launch.actions import OpaqueFunction

from groot_sage_ros.launch_support import declare, fail_on_error, feature_node
from launch import LaunchDescription

COMMON = ("device", "dtype", "camera_topics", "instruction", "use_sim_time")


def nodes(context) -> list:
    teacher = feature_node(context, "groot_node", "groot.yaml", ("checkpoint", *COMMON))
    fixed = {"teacher_features_topic": "groot_node/features"}
    student = feature_node(context, "sage_node", "sage.yaml", ("student", *COMMON), fixed)
    return [teacher, student, fail_on_error(teacher), fail_on_error(student)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([*declare("checkpoint", "student", *COMMON), OpaqueFunction(function=nodes)])
