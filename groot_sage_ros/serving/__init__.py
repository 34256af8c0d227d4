"""What the nodes need that is not ROS: node configs, frame sync, decoding, stats, embodiment YAML, images."""
