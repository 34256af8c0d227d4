"""The launch files, run as ``ros2 launch`` runs them, with the real ``launch`` and ``launch_ros`` (jazzy).

Each launch runs in its own process (``launch_runner.py``) against a colcon install space on
``AMENT_PREFIX_PATH``, with the tiny checkpoint on the CPU. A probe node then checks over DDS that the
nodes come up active in their namespace and publish features, that every launch argument reached the node
(read back through its parameter services), that ``params_file`` overrides the package's YAML, and that
SIGINT stops everything within launch's 5 s deadline with no error line.

``launch_ros`` is not on the package index: ``make test`` installs the wheels from ``../shared/wheels``
when that folder exists (CI always has it); without them these tests skip, saying so.
"""

import itertools
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import rclpy
from conftest import random_image
from rcl_interfaces.srv import GetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import parameter_value_to_python
from rclpy.qos import qos_profile_sensor_data
from ros_harness import frame_sender, isolate_dds, wait_for
from sensor_msgs.msg import Image
from std_msgs.msg import String

ROOT = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).with_name("launch_runner.py")
_ids = itertools.count()

WHEELS = ROOT.parent / "shared" / "wheels" / "ros-launch"
if not WHEELS.is_dir():
    pytest.skip(
        f"no {WHEELS}: launch_ros is not on the package index, and `make test` installs it from there "
        "(CI always has the folder)",
        allow_module_level=True,
    )
import launch_ros  # noqa: E402,F401 -- with the wheels at hand, a missing launch_ros is a failure, not a skip


@pytest.fixture(scope="module")
def probe():
    isolate_dds()
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f"launch_probe_{os.getpid()}", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown(context=context)


@pytest.fixture(scope="module")
def student_file(tiny_checkpoint, tmp_path_factory) -> Path:
    """A real (untrained) student for the teacher's width, written as distill writes one."""
    from groot_sage_ros.families.n1_5.processor import N15Processor, ProcessorConfig
    from groot_sage_ros.student.checkpoint import save_student
    from groot_sage_ros.student.config import StudentConfig
    from groot_sage_ros.student.model import SageStudent

    processor = N15Processor(ProcessorConfig())
    ids, _ = processor.encode(1, "Perform the default behavior.")
    config = StudentConfig.for_teacher(processor.facts, 64, sorted(set(ids)), width=32, layers=1, heads=2)
    model = SageStudent(config)
    path = tmp_path_factory.mktemp("student") / "student.safetensors"
    save_student(path, model, {"eval_groups": []}, step=0)
    return path


def launch(colcon_install: Path, launch_file: str, **arguments) -> subprocess.Popen:
    prefix = colcon_install.parent  # the install space (merged layout: one prefix per package)
    env = {
        **os.environ,
        "AMENT_PREFIX_PATH": str(colcon_install),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(
            [str(p) for p in colcon_install.glob("lib/python3*/site-packages")] + [os.environ.get("PYTHONPATH", "")]
        ),
    }
    assert (prefix / "groot_sage_ros" / "share" / "groot_sage_ros" / "launch" / launch_file).is_file()
    path = colcon_install / "share" / "groot_sage_ros" / "launch" / launch_file
    argv = [sys.executable, str(RUNNER), str(path), *(f"{k}:={v}" for k, v in arguments.items())]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def get_parameters(probe, node: str, names: list[str]) -> dict:
    """Parameter values read back through the node's own ``get_parameters`` service."""
    node_handle, executor = probe
    client = node_handle.create_client(GetParameters, f"{node}/get_parameters")
    try:
        assert wait_for(lambda: client.wait_for_service(timeout_sec=0.1), timeout=60), f"no {node}/get_parameters"
        future = client.call_async(GetParameters.Request(names=names))
        executor.spin_until_future_complete(future, timeout_sec=10)
        return dict(zip(names, (parameter_value_to_python(v) for v in future.result().values)))
    finally:
        node_handle.destroy_client(client)


def features_flow(probe, camera_topic: str, features_topic: str) -> Image:
    """Publish frames on ``camera_topic`` until a features message arrives on ``features_topic``."""
    node, executor = probe
    received = []
    sub = node.create_subscription(Image, features_topic, received.append, 10)
    pub = node.create_publisher(Image, camera_topic, qos_profile_sensor_data)
    send = frame_sender(node, executor, pub, random_image(48, 64), spin_s=0.05)

    def publish_and_spin():
        send()
        return bool(received)

    try:
        assert wait_for(publish_and_spin, timeout=120, period=0.05), f"no message on {features_topic}"
        return received[0]
    finally:
        node.destroy_subscription(sub)
        node.destroy_publisher(pub)


def stop(process: subprocess.Popen) -> str:
    """SIGINT, as Ctrl-C on ``ros2 launch``; its output (a generous timeout only guards against a hang)."""
    process.send_signal(signal.SIGINT)
    try:
        return process.communicate(timeout=120)[0]
    finally:
        if process.poll() is None:
            process.kill()


def assert_clean_stop(process: subprocess.Popen) -> None:
    """The nodes stopped on SIGINT by themselves: launch never escalated to SIGTERM (it does after 5 s, and
    says so), each process exited with its own status 0, and nothing went wrong on the way. No wall-clock
    bound: a busy machine may take longer, which is not a failure."""
    output = stop(process)
    assert process.returncode == 0, output
    for sign in ("SIGTERM", "SIGKILL", "[ERROR]", "Traceback", "context is invalid", "unexpected error"):
        assert sign not in output, output
    assert "process has finished cleanly" in output and "exit code" not in output.replace("exit code 0", ""), output


def params_file(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text("/**:\n  ros__parameters:\n    sync_slop_s: 0.345\n    warn_throttle_s: 7.0\n")
    return path


def test_groot_launch_passes_every_argument_and_stops_cleanly(probe, colcon_install, tiny_checkpoint, tmp_path):
    namespace = f"gl{next(_ids)}_{os.getpid()}"
    process = launch(
        colcon_install,
        "groot.launch.py",
        checkpoint=tiny_checkpoint,
        device="cpu",
        dtype="float32",
        camera_topics="['front/image_raw']",
        instruction="wave hello",
        namespace=namespace,
        use_sim_time="false",
        action_head="true",
        params_file=params_file(tmp_path),
        embodiment_config=ROOT / "config" / "embodiments" / "so100.yaml",
    )
    try:
        features = features_flow(probe, f"/{namespace}/front/image_raw", f"/{namespace}/groot_node/features")
        assert features.width == 64
        values = get_parameters(
            probe,
            f"/{namespace}/groot_node",
            [
                "checkpoint",
                "device",
                "dtype",
                "camera_topics",
                "default_instruction",
                "use_sim_time",
                "action_head.enabled",
                "action_head.embodiment_config",
                "sync_slop_s",
                "warn_throttle_s",
                "max_frame_age_s",
            ],
        )
    finally:
        assert_clean_stop(process)
    assert values == {
        "checkpoint": str(tiny_checkpoint),
        "device": "cpu",
        "dtype": "float32",
        "camera_topics": ["front/image_raw"],
        "default_instruction": "wave hello",
        "use_sim_time": False,
        "action_head.enabled": True,
        "action_head.embodiment_config": str(ROOT / "config" / "embodiments" / "so100.yaml"),
        "sync_slop_s": 0.345,
        "warn_throttle_s": 7.0,  # from params_file, over the package's YAML
        "max_frame_age_s": 1.0,  # from the package's YAML: params_file replaces none of the rest
    }


def test_groot_sage_launch_brings_up_both_nodes_with_every_argument(
    probe, colcon_install, tiny_checkpoint, student_file, tmp_path
):
    namespace = f"gs{next(_ids)}_{os.getpid()}"
    process = launch(
        colcon_install,
        "groot_sage.launch.py",
        checkpoint=tiny_checkpoint,
        student=student_file,
        device="cpu",
        dtype="float32",
        camera_topics="['cam/image_raw']",
        instruction="point",
        namespace=namespace,
        use_sim_time="false",
        params_file=params_file(tmp_path),
    )
    try:
        for node in ("groot_node", "sage_node"):
            features_flow(probe, f"/{namespace}/cam/image_raw", f"/{namespace}/{node}/features")
        names = [
            "device",
            "dtype",
            "camera_topics",
            "default_instruction",
            "use_sim_time",
            "sync_slop_s",
            "warn_throttle_s",
            "max_frame_age_s",
        ]
        teacher = get_parameters(probe, f"/{namespace}/groot_node", names + ["checkpoint"])
        student = get_parameters(probe, f"/{namespace}/sage_node", names + ["student", "teacher_features_topic"])
    finally:
        assert_clean_stop(process)
    common = {
        "device": "cpu",
        "dtype": "float32",
        "camera_topics": ["cam/image_raw"],
        "default_instruction": "point",
        "use_sim_time": False,
        "sync_slop_s": 0.345,
        "warn_throttle_s": 7.0,
        "max_frame_age_s": 1.0,
    }
    assert teacher == {**common, "checkpoint": str(tiny_checkpoint)}
    assert student == {**common, "student": str(student_file), "teacher_features_topic": "groot_node/features"}


def test_sage_launch_serves_the_student_in_its_namespace(probe, colcon_install, student_file, tmp_path):
    namespace = f"sl{next(_ids)}_{os.getpid()}"
    process = launch(
        colcon_install,
        "sage.launch.py",
        student=student_file,
        device="cpu",
        dtype="float32",
        camera_topics="['cam/image_raw']",
        instruction="point",
        namespace=namespace,
        use_sim_time="false",
        teacher_features_topic="/elsewhere/features",
        params_file=params_file(tmp_path),
    )
    try:
        layouts = []
        node, executor = probe
        sub = node.create_subscription(
            String,
            f"/{namespace}/sage_node/features/layout",
            layouts.append,
            rclpy.qos.QoSProfile(depth=1, durability=rclpy.qos.DurabilityPolicy.TRANSIENT_LOCAL),
        )
        features_flow(probe, f"/{namespace}/cam/image_raw", f"/{namespace}/sage_node/features")
        assert wait_for(lambda: executor.spin_once(timeout_sec=0.05) or layouts, timeout=10)
        node.destroy_subscription(sub)
        values = get_parameters(
            probe,
            f"/{namespace}/sage_node",
            ["student", "dtype", "default_instruction", "teacher_features_topic", "sync_slop_s"],
        )
    finally:
        assert_clean_stop(process)
    assert json.loads(layouts[-1].data)["instruction"] == "point"
    assert values == {
        "student": str(student_file),
        "dtype": "float32",
        "default_instruction": "point",
        "teacher_features_topic": "/elsewhere/features",
        "sync_slop_s": 0.345,
    }


def test_the_readmes_workspace_commands_run_from_the_colcon_install(colcon_install, tmp_path):
    """The README's `ros2 run groot_sage_ros ... --help` lines, after `source install/setup.bash`: ros2cli is
    not on the package index, so `ros2 run PKG EXE` is taken as what it runs, `<prefix>/lib/PKG/EXE`."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    commands = re.findall(r"^ros2 run groot_sage_ros (\S+) --help$", readme, re.M)
    assert sorted(commands) == ["groot-sage", "groot_node"], commands
    install = colcon_install.parent
    for executable in commands:
        script = f"source {install}/setup.bash && {colcon_install}/lib/groot_sage_ros/{executable} --help"
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "usage:" in done.stdout, done.stdout


def test_a_value_in_params_file_wins_over_every_argument_left_out(probe, colcon_install, tiny_checkpoint, tmp_path):
    namespace = f"pf{next(_ids)}_{os.getpid()}"
    site = tmp_path / "robot.yaml"
    site.write_text(
        "/**:\n  ros__parameters:\n"
        f"    checkpoint: {tiny_checkpoint}\n    device: cpu\n    dtype: float32\n"
        "    camera_topics: ['site/image_raw']\n    default_instruction: from the file\n"
    )
    process = launch(colcon_install, "groot.launch.py", namespace=namespace, params_file=site)
    try:
        features_flow(probe, f"/{namespace}/site/image_raw", f"/{namespace}/groot_node/features")
        names = ["checkpoint", "device", "dtype", "camera_topics", "default_instruction"]
        values = get_parameters(probe, f"/{namespace}/groot_node", names)
    finally:
        assert_clean_stop(process)
    assert values == {
        "checkpoint": str(tiny_checkpoint),
        "device": "cpu",
        "dtype": "float32",
        "camera_topics": ["site/image_raw"],
        "default_instruction": "from the file",
    }


def test_a_node_that_fails_to_configure_makes_the_launch_exit_1(colcon_install, tmp_path):
    process = launch(colcon_install, "groot.launch.py", checkpoint=tmp_path / "nowhere", device="cpu")
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 1, output
    assert "configure failed: parameter 'checkpoint'" in output and "groot_node-1 exited with code 1" in output, output
