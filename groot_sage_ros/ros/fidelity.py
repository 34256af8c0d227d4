"""sage_node's live fidelity: its features paired with the teacher's by stamp, the per-token cosine averaged.

``StampPairing`` is the ROS-free pairing; ``FidelityPairing`` is the part the node holds (it subscribes to
``teacher_features_topic`` and reports ``fidelity_cosine_mean`` and ``teacher_features_topic``)."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque

import numpy as np
from sensor_msgs.msg import Image

from ..serving.stats import Counters
from .conversions import BadImage, image_msg_to_features, stamp_ns
from .feature_node import FEATURES_QOS, NodePart

PENDING = 64  # unmatched outputs kept per side while waiting for the other


class StampPairing:
    """Two streams of (stamp, (L, D) features); each stamp present on both sides gives one mean per-token
    cosine. Unmatched entries are kept up to ``pending`` per side, oldest dropped first."""

    def __init__(self, counters: Counters, window: int = 200, pending: int = PENDING):
        self.counters, self.pending = counters, pending
        self.mine: OrderedDict[int, np.ndarray] = OrderedDict()
        self.theirs: OrderedDict[int, np.ndarray] = OrderedDict()
        self.cosines: deque[float] = deque(maxlen=window)
        self.lock = threading.Lock()

    def add(self, stamp: int, mine: np.ndarray | None = None, theirs: np.ndarray | None = None) -> None:
        with self.lock:
            if mine is not None:
                self.mine[stamp] = mine
            if theirs is not None:
                self.theirs[stamp] = theirs
            if stamp in self.mine and stamp in self.theirs:
                a, b = self.mine.pop(stamp), self.theirs.pop(stamp)  # (L, D) each
                if a.shape != b.shape:
                    self.counters.add("fidelity_shape_mismatch")
                    return
                cosine = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)  # (L,)
                self.cosines.append(float(cosine.mean()))
                self.counters.add("fidelity_pairs")
            for waiting in (self.mine, self.theirs):
                while len(waiting) > self.pending:
                    waiting.popitem(last=False)

    def mean(self) -> float | None:
        with self.lock:
            return float(np.mean(self.cosines)) if self.cosines else None


class FidelityPairing(NodePart):
    """The part of sage_node that pairs its features with the teacher's ``teacher_features_topic``."""

    def __init__(self, node):
        self.node = node
        self.pairing = StampPairing(node.counters)

    def subscriptions(self) -> list:
        topic = self.node.config.teacher_features_topic
        return [self.node.create_subscription(Image, topic, self.on_teacher_features, FEATURES_QOS)]

    def on_teacher_features(self, msg: Image) -> None:
        try:
            features = image_msg_to_features(msg)
        except BadImage as err:
            self.node._warn("teacher_features", f"teacher features ignored: {err}")
            return
        self.pairing.add(stamp_ns(msg.header.stamp), theirs=features)

    def after_features(self, stamp: int, features: np.ndarray, result, header) -> None:
        self.pairing.add(stamp, mine=features)

    def diagnostics(self) -> dict:
        mean = self.pairing.mean()
        return {
            "teacher_features_topic": self.node.config.teacher_features_topic,
            "fidelity_cosine_mean": f"{mean:.4f}" if mean is not None else "n/a",
        }
