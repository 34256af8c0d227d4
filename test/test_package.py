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
    assert re.search(r'"groot-sage = groot_sage_ros\.cli:main"', setup_py)
    assert "$base/lib/groot_sage_ros" in (ROOT / "setup.cfg").read_text()


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory) -> Path:
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists():
        pytest.skip("colcon is not installed in this environment (make env installs it)")
    tmp = tmp_path_factory.mktemp("colcon")
    src = tmp / "ws" / "src"
    src.mkdir(parents=True)
    (src / "groot_sage_ros").symlink_to(ROOT)
    out = subprocess.run(
        [str(colcon), "build", "--build-base", str(tmp / "build"), "--install-base", str(tmp / "install")],
        cwd=tmp / "ws", capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return tmp / "install" / "groot_sage_ros"


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

    from groot_sage_ros.node_config import TeacherNodeConfig, ros_name

    scripts = console_scripts()
    assert {"groot-sage", "groot_node", "sage_node"} <= set(scripts)
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target
    for launch_file in (ROOT / "launch").glob("*.launch.py"):
        executables = set(re.findall(r'executable="([\w-]+)"', launch_file.read_text()))
        assert executables and executables <= set(scripts), launch_file.name
    from groot_sage_ros.node_config import StudentNodeConfig

    for config_file, config_cls in (("groot.yaml", TeacherNodeConfig), ("sage.yaml", StudentNodeConfig)):
        declared = {ros_name(f) for f in fields(config_cls)}
        params = yaml.safe_load((ROOT / "config" / config_file).read_text())["/**"]["ros__parameters"]
        flat = {f"{k}.{sub}" if isinstance(v, dict) else k
                for k, v in params.items() for sub in (v if isinstance(v, dict) else [None])}  # fmt: skip
        assert flat == declared, config_file
    declared = {ros_name(f) for f in fields(TeacherNodeConfig)}
    launch_text = (ROOT / "launch" / "groot.launch.py").read_text()
    for name in re.findall(r'^\s+"([\w.]+)": (?:arg|ParameterValue)\(', launch_text, re.M):
        assert name in declared | {"use_sim_time"}, name


def test_launch_description_builds():
    launch_ros = pytest.importorskip("launch_ros", reason="launch_ros is not installed (not on PyPI; comes with ROS)")
    import importlib.util

    from launch import LaunchDescription

    def load(name):
        spec = importlib.util.spec_from_file_location(name.replace(".", "_"), ROOT / "launch" / name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        description = module.generate_launch_description()
        assert isinstance(description, LaunchDescription)
        return description, [e.node_executable for e in description.entities if isinstance(e, launch_ros.actions.Node)]

    assert load("sage.launch.py")[1] == ["sage_node"]
    assert load("groot_sage.launch.py")[1] == ["groot_node", "sage_node"]
    description, nodes = load("groot.launch.py")
    assert nodes == ["groot_node"]
    arguments = {e.name for e in description.entities if e.__class__.__name__ == "DeclareLaunchArgument"}
    assert {"checkpoint", "device", "dtype", "camera_topics", "instruction", "namespace", "use_sim_time",
            "action_head"} <= arguments  # fmt: skip


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
        [sys.executable, str(script), "--ros-args", "-r", "__ns:=/installed", "-p", f"checkpoint:={tiny_checkpoint}",
         "-p", "device:=cpu", "-p", "dtype:=float32", "-p", "diagnostics_period_s:=0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ),
    )  # fmt: skip
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
            return any(s.name.startswith("/installed/groot_node") and
                       {kv.key: kv.value for kv in s.values}.get("state") == "active"
                       for d in seen for s in d.status)  # fmt: skip
        assert wait_for(active, timeout=60), "no active diagnostics from the installed groot_node"
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=30)[0]
        probe.destroy_node()
        rclpy.try_shutdown(context=context)
    assert "loaded" in output and "Traceback" not in output, output


def test_readme_documents_every_node_parameter_and_topic():
    from dataclasses import fields

    from groot_sage_ros.node_config import StudentNodeConfig, TeacherNodeConfig, ros_name

    readme = (ROOT / "README.md").read_text()
    for f in fields(TeacherNodeConfig) + fields(StudentNodeConfig):
        assert f"| `{ros_name(f)}` |" in readme, ros_name(f)
    for topic in ("~/features", "~/features/layout", "/diagnostics", "`instruction`"):
        assert topic in readme, topic
