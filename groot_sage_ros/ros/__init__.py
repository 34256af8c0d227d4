"""ROS 2 wrappers around the core: nodes, parameters and message conversions. Imported by entry points only."""
