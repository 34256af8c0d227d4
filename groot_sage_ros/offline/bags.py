"""rosbag2 reading and writing with ``rosbags`` (pure Python, MCAP or sqlite3; no ROS needed).

Messages are serialised to CDR with rosbags' typestore, so bags written here play with ``ros2 bag play``.
A bag is written into a claimed output folder (``output_folder``): first in a private staging folder
inside it, then its files move up, ``metadata.yaml`` last, so a folder with ``metadata.yaml`` holds a
complete bag and a crashed run leaves nothing that looks like one.
"""

from __future__ import annotations

import io
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image as PILImage
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from ..output_folder import OutputError, OutputFolder
from ..owned_files import temporary_path

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
STRING = "std_msgs/msg/String"
STORAGE = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
BAG_NAMES = ("metadata.yaml", "*.mcap", "*.db3")  # what a bag folder of ours holds


def claim_bag_folder(path: str | Path, option: str = "--out", overwrite: bool = False) -> OutputFolder:
    """Lock a new bag folder for this run; refuse one that already holds a bag (unless ``overwrite``, which
    deletes the bag files this package wrote there)."""
    folder = OutputFolder.claim(path, "bag", overwrite=overwrite, option=option, names=BAG_NAMES)
    if os.path.lexists(folder.path / "metadata.yaml"):
        folder.release()
        raise OutputError(f"{option} {path}: already holds a bag; choose another folder")
    folder.delete_own_files()  # a crashed run's partial files (journaled as ours)
    return folder


def bag_fingerprint(bag: str | Path) -> dict:
    """What identifies an input bag in a run's identity: its absolute path, the size of its files and the
    sha256 of its ``metadata.yaml`` (message counts, time range, topics). Cheap: the messages are not read."""
    import hashlib

    path = Path(bag).absolute()
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
    metadata = path / "metadata.yaml"
    digest = hashlib.sha256(metadata.read_bytes()).hexdigest() if metadata.is_file() else None
    return {"path": str(path), "bytes": sum(p.stat().st_size for p in files), "metadata_sha256": digest}


@contextmanager
def bag_writer(folder: OutputFolder, storage: str = "mcap") -> Iterator[Writer]:
    """A rosbags Writer whose bag lands in the claimed ``folder`` whole, or not at all."""
    staging = folder.register_folder(temporary_path(folder.path / "staging").name)
    inner = staging / folder.path.name  # rosbags names the storage file after its folder
    try:
        with Writer(inner, version=9, storage_plugin=STORAGE[storage]) as writer:
            yield writer
        for item in sorted(inner.iterdir(), key=lambda p: p.name == "metadata.yaml"):  # metadata.yaml last
            folder.move_in(item, item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        folder.journal.record("gone", staging.name)


@lru_cache(maxsize=1)
def typestore():
    return get_typestore(Stores.ROS2_JAZZY)  # same sensor_msgs/std_msgs definitions as Kilted


def qos(durability: QosDurability, reliability: QosReliability) -> Qos:
    never = QosTime(sec=0, nsec=0)
    return Qos(QosHistory.KEEP_LAST, 1, reliability, durability, never, never, QosLiveliness.AUTOMATIC, never, False)


SENSOR_QOS = qos(QosDurability.VOLATILE, QosReliability.BEST_EFFORT)
LATCHED_QOS = qos(QosDurability.TRANSIENT_LOCAL, QosReliability.RELIABLE)


@dataclass
class CameraFrame:
    stamp_ns: int
    rgb: np.ndarray  # (H, W, 3) uint8
    frame_id: str = "camera"


def _header(store, stamp_ns: int, frame_id: str):
    types = store.types
    stamp = types["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def image_message(store, frame: CameraFrame, compressed: bool):
    header = _header(store, frame.stamp_ns, frame.frame_id)
    if compressed:
        buffer = io.BytesIO()
        PILImage.fromarray(frame.rgb).save(buffer, format="JPEG", quality=90)
        data = np.frombuffer(buffer.getvalue(), dtype=np.uint8)
        return store.types[COMPRESSED](header=header, format="rgb8; jpeg compressed bgr8", data=data)
    height, width = frame.rgb.shape[:2]
    data = np.ascontiguousarray(frame.rgb, dtype=np.uint8).reshape(-1)
    return store.types[IMAGE](
        header=header, height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3, data=data
    )


def write_camera_bag(
    out: str | Path,
    frames: Iterable[CameraFrame],
    instructions: Iterable[tuple[int, str]] = (),
    camera_topic: str = "/camera/image_raw",
    instruction_topic: str = "/instruction",
    compressed: bool = False,
    storage: str = "mcap",
) -> Path:
    """A bag with one camera topic (raw, or JPEG on ``<topic>/compressed``) and an instruction topic, in a
    new folder ``out`` (claimed for the run)."""
    store = typestore()
    out = Path(out)
    if compressed and not camera_topic.endswith("/compressed"):
        camera_topic += "/compressed"
    folder = claim_bag_folder(out)
    try:
        with bag_writer(folder, storage) as writer:
            camera = writer.add_connection(
                camera_topic, COMPRESSED if compressed else IMAGE, typestore=store, offered_qos_profiles=[SENSOR_QOS]
            )
            text = writer.add_connection(instruction_topic, STRING, typestore=store, offered_qos_profiles=[LATCHED_QOS])
            for stamp_ns, instruction in instructions:
                writer.write(text, stamp_ns, store.serialize_cdr(store.types[STRING](data=instruction), STRING))
            for frame in frames:
                msg = image_message(store, frame, compressed)
                writer.write(camera, frame.stamp_ns, store.serialize_cdr(msg, camera.msgtype))
    finally:
        folder.release()
    return out


@dataclass
class RawMessage:
    topic: str
    msgtype: str
    timestamp_ns: int  # receive/record time in the bag
    data: bytes  # CDR


def bag_topics(bag: str | Path) -> list[str]:
    """The topics recorded in a bag (from its metadata)."""
    with Reader(Path(bag)) as reader:
        return [c.topic for c in reader.connections]


def read_raw(bag: str | Path, topics: Iterable[str] | None = None) -> Iterator[RawMessage]:
    """Messages of ``topics`` (all if None) in time order, one at a time (never the whole bag)."""
    with Reader(Path(bag)) as reader:
        wanted = set(topics) if topics is not None else None
        connections = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not connections:  # rosbags reads every topic when given none
            return
        for connection, timestamp, data in reader.messages(connections=connections):
            yield RawMessage(connection.topic, connection.msgtype, timestamp, bytes(data))
