"""Run a launch file the way ``ros2 launch <package> <file> name:=value ...`` does (ros2launch's
``launch_a_launch_file``): a LaunchService in this process's main thread, the file included with the
``name:=value`` arguments. ``ros2cli`` is not on the package index, so the tests run this instead.

    python test/launch_runner.py path/to/file.launch.py name:=value ...
"""

import sys

from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import AnyLaunchDescriptionSource

from launch import LaunchDescription, LaunchService


def main(argv: list[str]) -> int:
    path, arguments = argv[0], [a.split(":=", 1) for a in argv[1:]]
    service = LaunchService(argv=argv[1:], noninteractive=True)
    service.include_launch_description(
        LaunchDescription(
            [IncludeLaunchDescription(AnyLaunchDescriptionSource(path), launch_arguments=[tuple(a) for a in arguments])]
        )
    )
    return service.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
