"""Offline tools: rosbag2 files in and out without a ROS installation (the ``rosbags`` library)."""
