"""Action chunks as ``trajectory_msgs/JointTrajectory``: one point per step of the chunk, in joint order."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint


def chunk_message(header, joint_names: list[str], positions: np.ndarray, control_rate_hz: float) -> JointTrajectory:
    """(H, J) joint positions -> a trajectory whose k-th point is due (k + 1) / control_rate_hz after ``header``'s
    stamp (the camera frame the chunk was computed from)."""
    trajectory = JointTrajectory(header=header, joint_names=list(joint_names))
    for k, row in enumerate(positions):
        seconds = (k + 1) / control_rate_hz
        due = Duration(sec=int(seconds), nanosec=int(seconds % 1 * 1e9))
        trajectory.points.append(JointTrajectoryPoint(positions=[float(v) for v in row], time_from_start=due))
    return trajectory
