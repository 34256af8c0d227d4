"""Package metadata agrees with itself, and colcon builds the package with the ROS 2 wheels."""

import re
import shutil
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


@pytest.mark.skipif(shutil.which("colcon", path=str(Path(sys.executable).parent)) is None,
                    reason="colcon is not installed in this environment (make env installs it)")
def test_colcon_build_installs_the_entry_points(tmp_path):
    src = tmp_path / "ws" / "src"
    src.mkdir(parents=True)
    (src / "groot_sage_ros").symlink_to(ROOT)
    colcon = str(Path(sys.executable).parent / "colcon")
    out = subprocess.run(
        [colcon, "build", "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install")],
        cwd=tmp_path / "ws", capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    install = tmp_path / "install" / "groot_sage_ros"
    script = install / "lib" / "groot_sage_ros" / "groot-sage"
    assert script.is_file()
    assert (install / "share" / "groot_sage_ros" / "package.xml").is_file()
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "groot_sage_ros").is_file()
    run = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "tiny-checkpoint" in run.stdout
