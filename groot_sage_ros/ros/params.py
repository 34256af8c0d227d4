"""Declare a config dataclass's fields as ROS parameters (with descriptors) and read them back."""

from __future__ import annotations

from dataclasses import MISSING, fields

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from ..serving.node_config import ros_name


def descriptor(f) -> ParameterDescriptor:
    meta = f.metadata
    text = meta.get("description", "")
    if meta.get("choices"):
        text += f" (one of: {', '.join(meta['choices'])})"
    desc = ParameterDescriptor(description=text, read_only=bool(meta.get("read_only")))
    low_high = meta.get("range")
    if low_high is not None:
        if f.type in ("int", int):
            desc.integer_range = [IntegerRange(from_value=low_high[0], to_value=low_high[1], step=1)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(low_high[0]), to_value=float(low_high[1]))]
    return desc


def default_of(f):
    return f.default_factory() if f.default is MISSING else f.default


def declare_parameters(node, config_cls) -> None:
    """One ROS parameter per dataclass field (named as the field or its ros_name), default and descriptor."""
    for f in fields(config_cls):
        node.declare_parameter(ros_name(f), default_of(f), descriptor(f))


def read_config(node, config_cls):
    """The dataclass built from the node's current parameter values (validated by its __post_init__)."""
    values = {}
    for f in fields(config_cls):
        value = node.get_parameter(ros_name(f)).value
        values[f.name] = list(value) if isinstance(default_of(f), list) else value
    return config_cls(**values)
