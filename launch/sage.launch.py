"""Start the SAGE student alone, with config/sage.yaml, then params_file, then the arguments given.

    ros2 launch groot_sage_ros sage.launch.py student:=/models/student.safetensors camera_topics:="['/front/image_raw']"

A value in params_file wins over every argument left out; the launch exits 1 when the node fails to start.
"""

from groot_sage_ros.launch_support import single_node_launch
from launch import LaunchDescription

ARGUMENTS = ("student", "device", "dtype", "camera_topics", "instruction", "use_sim_time", "teacher_features_topic")


def generate_launch_description() -> LaunchDescription:
    return single_node_launch("sage_node", "sage.yaml", ARGUMENTS)
