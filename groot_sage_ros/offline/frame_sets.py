"""Frame sets from recorded bags, paired exactly as the node pairs live frames (``frames.FrameSetSync``).

Streams one message at a time (never a whole bag in memory). Camera messages stay serialised until a
consumer decodes the ones it needs. Everything that is dropped is counted in ``counts`` by reason:
``unreadable_bag``, ``truncated_bag``, ``bag_without_camera_topics``, ``no_instruction`` (frames before any
instruction), ``unsynchronised`` (frames that found no partner within the slop), ``corrupt_message`` (a
camera or instruction message whose bytes do not deserialise), ``rejected_instruction`` and
``rejected_instruction_too_long`` (a recorded instruction that fails ``serving.instructions``' check: the
one in force before it stays, as in the node). ``survey_bags`` checks the inputs before
any heavy work and raises one clear ValueError where no frame set could come out.
"""

from __future__ import annotations

import logging
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from rosbags.rosbag2 import Reader

from ..serving.decoding import (
    BadImage,
    cdr_header_stamp_ns,
    deserialize_checked,
    message_to_array,
)
from ..serving.frames import Frame, FrameSetSync
from ..serving.instructions import InstructionRejected
from .bags import COMPRESSED, IMAGE, typestore

log = logging.getLogger(__name__)
STRING = "std_msgs/msg/String"
CAMERA_TYPES = (IMAGE, COMPRESSED)


@dataclass
class RecordedFrame:
    topic: str
    msgtype: str
    data: bytes  # CDR


@dataclass
class RecordedFrameSet:
    index: int  # running number over all bags, in stream order
    bag: str
    frames: list[RecordedFrame]  # camera order
    stamp_ns: int  # newest header stamp of the set
    instruction: str

    @property
    def newest(self) -> RecordedFrame:
        return max(self.frames, key=lambda f: cdr_header_stamp_ns(f.data))

    def frame_id(self) -> str:
        return cdr_frame_id(self.newest.data)

    def decode(self) -> list:
        """Camera arrays (raises decoding.BadImage with a reason for bad frames)."""
        store = typestore()
        return [message_to_array(deserialize_checked(store.deserialize_cdr, f.data, f.msgtype)) for f in self.frames]


def cdr_frame_id(data: bytes) -> str:
    """header.frame_id of a serialised message that starts with a Header (after the 8-byte stamp)."""
    fmt = "<I" if data[1] & 1 else ">I"
    (size,) = struct.unpack_from(fmt, data, 12)
    return data[16 : 16 + size - 1].decode("utf-8", "replace")


def survey_bags(bags: list, camera_topics: list[str], instruction_topic: str | None, instruction: str | None) -> int:
    """Check the inputs from the bags' metadata, before any model is loaded; returns the number of messages
    on the first camera topic (for progress). ValueError, naming the bag or topic, when a path does not
    exist, no bag can be read, no bag has every camera topic, a camera topic is not an image topic, or
    no frame can get an instruction (none given and none recorded)."""
    total, usable, unreadable, instructions = 0, 0, [], 0
    for bag in map(Path, bags):
        if not bag.exists():
            raise ValueError(f"bag {bag} does not exist")
        try:
            with Reader(bag) as reader:
                topics = {c.topic: c for c in reader.connections}
                counts = {t: sum(c.msgcount for c in reader.connections if c.topic == t) for t in topics}
        except Exception as err:  # noqa: BLE001 -- rosbags raises several types for broken files
            unreadable.append(f"{bag} ({err})")
            continue
        for topic in camera_topics:
            if topic in topics and topics[topic].msgtype not in CAMERA_TYPES:
                raise ValueError(
                    f"camera topic {topic} in {bag} carries {topics[topic].msgtype}, expected "
                    f"{' or '.join(CAMERA_TYPES)}"
                )
        if all(t in topics for t in camera_topics):
            usable += 1
            total += counts[camera_topics[0]]
            instructions += counts.get(instruction_topic, 0) if instruction_topic else 0
    if not usable:
        if unreadable and len(unreadable) == len(bags):
            raise ValueError(f"no input bag could be read: {'; '.join(unreadable[:3])}")
        raise ValueError(f"no input bag has all camera topics {camera_topics}")
    if instruction is None and not instructions:
        raise ValueError(
            f"no message on the instruction topic {instruction_topic} in the bags with the cameras: "
            "pass --instruction TEXT to use one instruction for every frame set"
        )
    return total


def read_frame_sets(
    bags: Iterable[str | Path],
    camera_topics: list[str],
    instruction_topic: str | None,
    counts: Counter,
    instruction: str | None = None,
    sync_slop_s: float = 0.05,
    queue_size: int = 8,
    check_instruction: Callable[[str], str] | None = None,
) -> Iterator[RecordedFrameSet]:
    """Frame sets of ``camera_topics`` across ``bags``, each with the instruction in force at it (recorded
    instructions pass ``check_instruction`` first, when given)."""
    index, seen_camera_bag = 0, False
    warned: set[str] = set()
    store = typestore()
    for bag in bags:
        bag = str(bag)
        try:
            reader = Reader(Path(bag))
            reader.open()
        except Exception as err:  # noqa: BLE001 -- rosbags raises several types for broken files
            counts["unreadable_bag"] += 1
            log.warning("skipping %s: unreadable bag (%s)", bag, err)
            continue
        try:
            topics = {c.topic: c for c in reader.connections}
            missing = [t for t in camera_topics if t not in topics]
            if missing:
                counts["bag_without_camera_topics"] += 1
                log.warning("skipping %s: no %s (topics: %s)", bag, missing, sorted(topics))
                continue
            seen_camera_bag = True
            sync = FrameSetSync(len(camera_topics), int(sync_slop_s * 1e9), queue_size)
            current = instruction
            wanted = [c for c in reader.connections if c.topic in camera_topics or c.topic == instruction_topic]
            messages = reader.messages(connections=wanted)
            while True:
                try:
                    connection, _, data = next(messages)
                except StopIteration:
                    break
                except Exception as err:  # noqa: BLE001 -- a truncated or corrupt chunk ends this bag
                    counts["truncated_bag"] += 1
                    log.warning("%s: stopped reading at a damaged record (%s)", bag, err)
                    break
                if connection.topic == instruction_topic and connection.topic not in camera_topics:
                    if instruction is None:  # an explicit --instruction wins over the bag's
                        try:
                            text = deserialize_checked(store.deserialize_cdr, bytes(data), STRING).data
                        except BadImage:
                            counts["corrupt_message"] += 1
                            continue
                        try:
                            current = check_instruction(text) if check_instruction else text
                        except InstructionRejected as err:
                            counts[f"rejected_{err.reason}"] += 1
                            if err.reason not in warned:  # once per reason: the counts say how many
                                warned.add(err.reason)
                                log.warning(
                                    "%s: a recorded instruction was rejected (%s); the one before it stays", bag, err
                                )
                    continue
                data = bytes(data)
                camera = camera_topics.index(connection.topic)
                try:
                    stamp = cdr_header_stamp_ns(data)
                except BadImage:
                    counts["corrupt_message"] += 1
                    continue
                frame = Frame(camera, stamp, RecordedFrame(connection.topic, connection.msgtype, data))
                before = sync.unmatched
                frame_set = sync.add(frame)
                counts["unsynchronised"] += sync.unmatched - before
                if frame_set is None:
                    continue
                if current is None:
                    counts["no_instruction"] += 1
                    continue
                yield RecordedFrameSet(index, bag, [f.payload for f in frame_set.frames], frame_set.stamp_ns, current)
                index += 1
            if len(camera_topics) > 1:
                counts["unsynchronised"] += sum(len(q) for q in sync.queues)  # left waiting at the end
        finally:
            reader.close()
    if not seen_camera_bag:
        raise ValueError(f"no input bag has all camera topics {camera_topics}")
