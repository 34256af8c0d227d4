"""Teacher features as ROS topics in a bag, and back.

``write_feature_bag``: the source bags' camera and instruction messages plus ``/groot_node/features``
(sensor_msgs/Image, 16FC1, header = the frame set's newest camera header) and
``/groot_node/features/layout`` (JSON, on change), so ``ros2 bag play`` can feed a student node offline.

``dataset_from_bag``: the reverse, for a bag recorded while ``groot_node`` ran live on a replayed bag:
pairs each features message with the camera frame set of the same stamp and writes a dataset. Nothing is
lost uncounted: every frame set becomes a sample or is counted once under a frame-side reason
(``frames_without_features``, a bad image's reason, ``layout_mismatch``, ``bad_layout``,
``unknown_feature_encoding``), and every features message that pairs with no frame set is counted under
``features_without_frames`` or ``corrupt_features_message`` (whose frame set, if any, is counted too).
"""

from __future__ import annotations

import json
import logging
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import torch
from rosbags.rosbag2 import Reader

from ..api import TokenFacts, TokenLayout
from ..families import by_name
from ..output_folder import OutputFolder
from ..owned_files import write_json_atomic
from ..serving.decoding import BadImage, cdr_header_stamp_ns, deserialize_checked
from ..serving.instructions import InstructionRejected, check_instruction
from .bags import (
    LATCHED_QOS,
    STRING,
    bag_fingerprint,
    bag_topics,
    bag_writer,
    claim_bag_folder,
    read_raw,
    typestore,
)
from .config import DatasetFromBagConfig
from .dataset import (
    MANIFEST,
    SCHEMA_VERSION,
    FeatureDataset,
    Sample,
    claim_dataset_folder,
    shard_name,
    write_shard,
)
from .frame_sets import read_frame_sets, survey_bags

log = logging.getLogger(__name__)
FEATURES_TOPIC = "/groot_node/features"
IMAGE = "sensor_msgs/msg/Image"


def write_feature_bag(
    dataset_dir,
    out_bag,
    bags,
    camera_topics,
    instruction_topic,
    features_topic: str = FEATURES_TOPIC,
    storage: str = "mcap",
    folder: OutputFolder | None = None,
) -> Path:
    """The bag, in ``out_bag`` (``folder``: already claimed by the caller, else claimed here)."""
    claimed = folder or claim_bag_folder(out_bag, "--out-bag")
    try:
        return _write_feature_bag(dataset_dir, claimed, bags, camera_topics, instruction_topic, features_topic, storage)
    finally:
        if folder is None:
            claimed.release()


def _write_feature_bag(dataset_dir, folder, bags, camera_topics, instruction_topic, features_topic, storage) -> Path:
    dataset = FeatureDataset(dataset_dir)
    by_stamp = {key: i for i, key in enumerate(dataset.keys())}  # (bag, newest camera stamp) -> row
    store = typestore()
    types = store.types
    teacher = dataset.manifest["teacher"]
    with bag_writer(folder, storage) as writer:
        connections = {}
        feature_conn = writer.add_connection(features_topic, IMAGE, typestore=store)
        layout_conn = writer.add_connection(
            features_topic + "/layout", STRING, typestore=store, offered_qos_profiles=[LATCHED_QOS]
        )
        last_layout = None
        for bag in bags:
            with Reader(Path(bag)) as reader:
                wanted = [c for c in reader.connections if c.topic in camera_topics or c.topic == instruction_topic]
                for connection, timestamp, data in reader.messages(connections=wanted):
                    if connection.topic not in connections:
                        connections[connection.topic] = writer.add_connection(
                            connection.topic,
                            connection.msgtype,
                            typestore=store,
                            offered_qos_profiles=connection.ext.offered_qos_profiles,
                        )
                    writer.write(connections[connection.topic], timestamp, bytes(data))
                    if connection.topic not in camera_topics:
                        continue
                    try:
                        msg = deserialize_checked(store.deserialize_cdr, bytes(data), connection.msgtype)
                    except BadImage:
                        continue  # extract counted it; it has no features row
                    stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                    row = by_stamp.pop((str(bag), stamp), None)
                    if row is None:
                        continue
                    sample = dataset[row]
                    layout = {
                        "model_id": teacher["checkpoint"],
                        "feature_dim": teacher["feature_dim"],
                        "feature_dtype": "float16",
                        "encoding": "16FC1",
                        "model_dtype": teacher["model_dtype"],
                        "camera_topics": list(camera_topics),
                        "instruction": sample["source"]["instruction"],
                        "instruction_format": teacher.get("instruction_format"),
                        "tokens": dataset.facts.to_dict(),
                        **sample["layout"].to_dict(),
                    }
                    if layout != last_layout:
                        text = json.dumps(layout, sort_keys=True)
                        writer.write(layout_conn, timestamp, store.serialize_cdr(types[STRING](data=text), STRING))
                        last_layout = layout
                    features = sample["features"].numpy()  # (L, D) float16
                    image = types[IMAGE](
                        header=msg.header,
                        height=features.shape[0],
                        width=features.shape[1],
                        encoding="16FC1",
                        is_bigendian=0,
                        step=features.shape[1] * 2,
                        data=np.frombuffer(features.tobytes(), dtype=np.uint8),
                    )
                    writer.write(feature_conn, timestamp, store.serialize_cdr(image, IMAGE))
    return folder.path


def dataset_from_bag(config: DatasetFromBagConfig) -> dict:
    """Pair recorded ``features_topic`` messages with their camera frame sets into a dataset at ``out``."""
    bags, camera_topics, features_topic, out = (
        config.bags,
        config.camera_topics,
        config.features_topic,
        Path(config.out),
    )
    tokenizer, overwrite, shard_size, sync_slop_s = (
        config.tokenizer,
        config.overwrite,
        config.shard_size,
        config.sync_slop_s,
    )
    survey_bags(bags, camera_topics, None, instruction="(see layout)")
    layouts = read_layouts(bags, features_topic + "/layout")
    if not layouts:
        topics = sorted({topic for bag in bags for topic in bag_topics(bag)})
        raise ValueError(
            f"no {features_topic}/layout messages in {', '.join(map(str, bags))}, so no recorded teacher "
            f"features to pair with (topics there: {', '.join(topics)}); record groot_node's "
            "~/features and ~/features/layout, or name them with --features-topic"
        )
    first = layouts[0][1]
    if not isinstance(first, dict) or not isinstance(first.get("feature_dim"), int) or first["feature_dim"] < 1:
        raise ValueError(f"{features_topic}/layout in {bags[0]}: not a groot_node layout (no feature_dim)")
    facts = TokenFacts.from_dict(first.get("tokens"), f"{features_topic}/layout in {bags[0]}: tokens")
    family = by_name(facts.family, f"{features_topic}/layout in {bags[0]}: tokens.family")
    identity = {
        "command": "dataset-from-bag",
        "bags": [bag_fingerprint(bag) for bag in bags],
        "camera_topics": list(camera_topics),
        "features_topic": features_topic,
        "tokenizer": tokenizer,
        "shard_size": shard_size,
        "sync_slop_s": sync_slop_s,
    }
    folder = claim_dataset_folder(out, overwrite, identity)
    try:
        processor = family.processor(tokenizer=tokenizer, instruction_format=first.get("instruction_format"))
        return _pair_into(
            folder, bags, camera_topics, features_topic, layouts, first, processor, shard_size, sync_slop_s
        )
    except BaseException:
        folder.discard_if_unused()
        raise
    finally:
        folder.release()


def paired_messages(bag, camera_topics, features_topic, counts: Counter, sync_slop_s: float):
    """(frame set, features message) pairs of one bag, by header stamp, counting what does not pair. The
    node publishes features in stamp order, so a frame set older than the next features message never
    gets any."""
    # The instruction comes from the recorded layout of each features message, not from a topic.
    frame_sets = read_frame_sets(
        [bag], camera_topics, None, counts, instruction="(see layout)", sync_slop_s=sync_slop_s
    )
    waiting: OrderedDict[int, object] = OrderedDict()  # stamp -> frame set read ahead, oldest first
    exhausted, store = False, typestore()
    for raw in read_raw(bag, [features_topic]):
        try:
            stamp = cdr_header_stamp_ns(raw.data)
        except BadImage:
            counts["corrupt_features_message"] += 1
            continue
        while not exhausted and (not waiting or next(reversed(waiting)) < stamp):
            frame_set = next(frame_sets, None)
            exhausted = frame_set is None
            if frame_set is not None:
                waiting[frame_set.stamp_ns] = frame_set
        while waiting and next(iter(waiting)) < stamp:
            waiting.popitem(last=False)
            counts["frames_without_features"] += 1
        if stamp not in waiting:
            counts["features_without_frames"] += 1
            continue
        frame_set = waiting.pop(stamp)
        try:
            message = deserialize_checked(store.deserialize_cdr, raw.data, raw.msgtype)
        except BadImage:
            counts["corrupt_features_message"] += 1
            counts["frames_without_features"] += 1
            continue
        yield frame_set, message
    counts["frames_without_features"] += len(waiting) + sum(1 for _ in frame_sets)


def _pair_into(folder, bags, camera_topics, features_topic, layouts, first, processor, shard_size, sync_slop_s) -> dict:
    out = folder.path
    pad_id = processor.facts.pad_token_id
    counts, shard_counts = Counter(), Counter()
    samples, shards, index, shard = [], [], 0, 0
    for bag in bags:
        for frame_set, message in paired_messages(bag, camera_topics, features_topic, counts, sync_slop_s):
            sample = pair(processor, frame_set, message, layout_at(layouts, stamp_of(message)), index, shard_counts)
            if sample is None:
                continue
            samples.append(sample)
            index += 1
            if len(samples) == shard_size:
                shards.append(shard_entry(out, shard, samples, shard_counts, first["feature_dim"], pad_id))
                samples, shard, shard_counts = [], shard + 1, Counter()
    counts.update(shard_counts)
    if samples:
        shards.append(shard_entry(out, shard, samples, shard_counts, first["feature_dim"], pad_id))
    if not shards:
        folder.delete_own_files()
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()) if v) or "none"
        raise ValueError(
            f"no recorded features paired with a camera frame set, so no dataset was written to {out} "
            f"(skipped: {reasons})"
        )
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "num_samples": sum(s["num_samples"] for s in shards),
        "skipped": dict(sorted((k, v) for k, v in counts.items() if v)),
        "teacher": {
            "checkpoint": first["model_id"],
            "content_hash": None,
            "feature_dim": first["feature_dim"],
            "features_dtype": "float16",
            "model_dtype": first.get("model_dtype"),
            **processor.describe(),
        },
        "tokens": processor.facts.to_dict(),
        "camera_topics": list(camera_topics),
        "instruction_topic": None,
        "instruction_override": None,
        "source_bags": [str(b) for b in bags],
        "recorded_features_topic": features_topic,
        "shard_size": shard_size,
        "run": folder.recorded_identity(),
        "shards": shards,
    }
    write_json_atomic(out / MANIFEST, manifest)
    return manifest


def shard_entry(out: Path, shard: int, samples: list, skipped: Counter, feature_dim: int, pad_id: int) -> dict:
    size, sha256 = write_shard(out / shard_name(shard), samples, skipped, feature_dim, pad_id)
    return {"file": shard_name(shard), "num_samples": len(samples), "bytes": size, "sha256": sha256}


def read_layouts(bags, topic) -> list[tuple[int, dict]]:
    """(bag time, layout) of every layout message, in order (small: one per change)."""
    layouts = []
    store = typestore()
    for bag in bags:
        with Reader(Path(bag)) as reader:
            connections = [c for c in reader.connections if c.topic == topic]
            if not connections:  # rosbags reads every topic when given none
                continue
            for connection, timestamp, data in reader.messages(connections=connections):
                try:
                    layouts.append(
                        (timestamp, json.loads(deserialize_checked(store.deserialize_cdr, bytes(data), STRING).data))
                    )
                except (BadImage, ValueError):
                    log.warning("%s: a damaged %s message was ignored", bag, topic)
    return layouts


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def layout_at(layouts, stamp: int) -> dict:
    """The last layout sent at or before ``stamp`` (layouts precede the features they describe)."""
    current = layouts[0][1]
    for time_ns, layout in layouts:
        if time_ns > stamp:
            break
        current = layout
    return current


def pair(processor, frame_set, features_msg, layout: dict, index: int, skipped: Counter) -> Sample | None:
    from ..serving.decoding import BadImage

    dtype = {"32FC1": np.float32, "16FC1": np.float16}.get(features_msg.encoding)
    if dtype is None:
        skipped["unknown_feature_encoding"] += 1
        return None
    data = features_msg.data.tobytes()
    if len(data) != features_msg.height * features_msg.width * np.dtype(dtype).itemsize:
        skipped["corrupt_features_message"] += 1
        return None
    features = np.frombuffer(data, dtype=dtype).reshape(features_msg.height, features_msg.width)
    try:
        check_instruction(layout["instruction"], processor)  # the recorded one passes the check every one passes
    except InstructionRejected as err:
        skipped[f"rejected_{err.reason}"] += 1
        return None
    except (KeyError, TypeError):
        skipped["bad_layout"] += 1
        return None
    try:
        images = frame_set.decode()
        ids, token_layout = processor.encode(len(images), layout["instruction"])
        frames = processor.preprocess_images(images)
        recorded = TokenLayout.from_dict(layout)
    except (BadImage, ValueError) as err:
        skipped[getattr(err, "reason", "bad_input")] += 1
        return None
    except (KeyError, TypeError):  # a layout message without the fields groot_node writes
        skipped["bad_layout"] += 1
        return None
    if token_layout.seq_len != features.shape[0] or token_layout != recorded:
        skipped["layout_mismatch"] += 1
        return None
    source = {
        "bag": frame_set.bag,
        "topics": [f.topic for f in frame_set.frames],
        "frame_id": frame_set.frame_id(),
        "instruction": layout["instruction"],
    }
    return Sample(
        index,
        frames,
        list(ids),
        token_layout,
        torch.from_numpy(features.astype(np.float16)),
        frame_set.stamp_ns,
        source,
    )
