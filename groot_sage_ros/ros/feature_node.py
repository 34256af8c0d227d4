"""``FeatureNode``: the lifecycle node that groot_node (the teacher) and sage_node (the student) share.

Subscribes to ``camera_topics`` (sensor-data QoS) and ``instruction`` (reliable, transient-local);
publishes ``~/features`` (sensor_msgs/Image, tokens x feature dim), ``~/features/layout`` (JSON,
transient-local) and ``/diagnostics``. One inference worker thread: the freshest complete frame set wins,
superseded and stale sets are dropped and counted, and executor callbacks never wait on the GPU. The
lifecycle owns the model: loaded (and warmed up) at configure, kept through deactivate and activate (an
activated node answers at once, without loading again; ``engine_loads`` counts the loads), freed at
cleanup and shutdown.

A subclass says which model to load (``load_model``, an ``api.FeatureEngine``) and which parts the node
holds (``make_parts``): the action-chunk publisher, the student's fidelity pairing (``NodePart``). The node
calls each part at configure (its outputs), activate (its inputs), after each published frame set and for
diagnostics. ``node_process.spin_node`` runs one node as a process; ``stop()`` and ``release()`` end it.
"""

from __future__ import annotations

import gc
import threading
import time
from dataclasses import fields

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import (
    DurabilityPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from ..api import FeatureEngine
from ..engine.runtime import resolve_device
from ..errors import user_error_line
from ..serving.diagnostics import diagnostic_values
from ..serving.frames import Frame, FrameSetSync, LatestSlot
from ..serving.instructions import InstructionRejected, check_instruction
from ..serving.node_config import ros_name
from ..serving.stats import Counters, LatencyStats, RateMeter
from .conversions import (
    BadImage,
    camera_message,
    cdr_header_stamp_ns,
    deserialize_checked,
    features_to_cdr,
    layout_json,
    message_to_array,
)
from .params import declare_parameters, read_config

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
FEATURES_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)


def quote(text: str | None, limit: int = 80) -> str:
    """A user's text for a log line: repr of at most ``limit`` characters, with the full length when cut."""
    if text is None:
        return "None"
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def configure_error(err: BaseException) -> str:
    """One line for a configure failure (the line the command line prints, at most 400 characters)."""
    return user_error_line(err, limit=400)


class NodePart:
    """Something a feature node holds and calls (the action-chunk publisher, the fidelity pairing); each
    method is called by the node at the moment its name says, and does nothing unless the part needs it."""

    def outputs(self) -> list:
        """Lifecycle publishers, created at configure and destroyed at cleanup."""
        return []

    def subscriptions(self) -> list:
        """Subscriptions, created at activate and destroyed at deactivate."""
        return []

    def after_features(self, stamp: int, features: np.ndarray, result, header) -> None:
        """Work after a frame set's features are published (on the worker thread)."""

    def warm_up(self, result) -> None:
        """The work ``after_features`` does, on the configure warm-up's result, publishing nothing."""

    def diagnostics(self) -> dict:
        return {}

    def release(self) -> None:
        """Drop what the part holds of the model (with the node's model)."""


def check_device(device: str) -> None:
    """ValueError naming the 'device' parameter when it is not usable here."""
    try:
        resolve_device(device)
    except ValueError as err:
        raise ValueError(f"parameter 'device': {err}") from None


def check_default_instruction(cfg, engine: FeatureEngine) -> None:
    """``default_instruction`` passes the check every instruction passes, with ``engine``'s processor
    (ValueError naming the parameter): at configure, before the warm-up uses it, and when set at run time."""
    try:
        check_instruction(cfg.default_instruction, engine.processor, cfg.max_instruction_chars)
    except InstructionRejected as err:
        raise ValueError(f"parameter 'default_instruction' {quote(cfg.default_instruction)}: {err}") from None


class FeatureNode(LifecycleNode):
    config_cls: type  # the node's config dataclass (serving/node_config.py): its parameters
    executable: str  # the console script, for --help

    def __init__(self, node_name: str, **kwargs):
        super().__init__(node_name, **kwargs)
        declare_parameters(self, self.config_cls)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.config = None  # a config_cls instance once configured
        self.engine: FeatureEngine | None = None
        self.counters = Counters()
        self.latency = LatencyStats()
        self.output_rate = RateMeter()
        self.input_rates: list[RateMeter] = []
        self._slot = LatestSlot()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._input_subs: list = []
        self._sync: FrameSetSync | None = None
        self._camera_types: list[type] = []
        self._instruction: str | None = None
        self._sent_layout: dict | None = None
        self._warn_last: dict[str, float] = {}
        self._warnings: dict[str, str] = {}
        self._warn_lock = threading.Lock()
        self._features_pub = self._layout_pub = self._diag_pub = self._diag_timer = None
        self.parts: list[NodePart] = []  # made at configure (make_parts)
        self._part_publishers: list = []
        self.start_seconds: float | None = None
        self.warmup_seconds: float | None = None
        self.start_failed = False  # autostart's configure or activate failed: spin_node exits non-zero
        if self.get_parameter("autostart").value:
            configured = self.trigger_configure() == TransitionCallbackReturn.SUCCESS
            self.start_failed = not configured or self.trigger_activate() != TransitionCallbackReturn.SUCCESS

    # -- lifecycle -------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        start = time.perf_counter()
        try:
            self.config = read_config(self, self.config_cls)
            self.parts = self.make_parts(self.config)
            self.engine = self.load_model(self.config)
            self.counters.add("engine_loads")
            self.warmup_seconds = self.warm_up_serving()
        except Exception as err:  # noqa: BLE001 -- every failure is one line and a failed transition
            self.get_logger().error(f"configure failed: {configure_error(err)}")
            self.config = None
            return TransitionCallbackReturn.FAILURE
        self.start_seconds = time.perf_counter() - start
        self._features_pub = self.create_lifecycle_publisher(Image, "~/features", FEATURES_QOS)
        self._layout_pub = self.create_lifecycle_publisher(String, "~/features/layout", LATCHED)
        self._part_publishers = [publisher for part in self.parts for publisher in part.outputs()]
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Steady clock: diagnostics keep coming while a bag is paused or before /clock starts (use_sim_time).
        self._diag_timer = self.create_timer(
            self.config.diagnostics_period_s, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME)
        )
        self.get_logger().info(
            f"loaded {self.model_id} on {self.config.device} ({self.config.dtype}), "
            f"feature dim {self.engine.feature_dim}, in {self.start_seconds:.1f} s"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        cfg = self.config
        self._sync = FrameSetSync(len(cfg.camera_topics), int(cfg.sync_slop_s * 1e9), cfg.sync_queue_size)
        self.input_rates = [RateMeter() for _ in cfg.camera_topics]
        self._camera_types = [CompressedImage if t.endswith("/compressed") else Image for t in cfg.camera_topics]
        for camera, (topic, msg_type) in enumerate(zip(cfg.camera_topics, self._camera_types)):
            callback = lambda data, camera=camera: self._on_image(camera, data)  # noqa: E731
            # raw=True: the callback gets the CDR bytes; only frame sets the worker uses are deserialised
            sub = self.create_subscription(msg_type, topic, callback, qos_profile_sensor_data, raw=True)
            self._input_subs.append(sub)
        self._input_subs.append(self.create_subscription(String, cfg.instruction_topic, self._on_instruction, LATCHED))
        self._input_subs += [subscription for part in self.parts for subscription in part.subscriptions()]
        self._slot = LatestSlot()
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="groot_inference", daemon=True)
        self._worker.start()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop serving; the engine stays loaded and warm, so activate answers the next frame at once."""
        self.stop()
        for sub in self._input_subs:
            self.destroy_subscription(sub)
        self._input_subs.clear()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        for pub in (self._features_pub, self._layout_pub, *self._part_publishers):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._part_publishers, self.parts = [], []
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
        self._features_pub = self._layout_pub = self._diag_pub = self._diag_timer = None
        self._sent_layout = None
        self.config = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop()
        self.release()
        return TransitionCallbackReturn.SUCCESS

    @property
    def model_id(self) -> str:
        raise NotImplementedError

    def warm_up_serving(self, passes: int = 2) -> float:
        """Every path a frame set takes, ``passes`` times, on synthetic frames of ``warmup_camera_size`` for
        each camera, in its message type: deserialising and decoding, preprocessing at that size, the
        model, the parts (the action head) and the features message; nothing is published. What a first
        real frame would compile or capture happens here, at configure. Returns the seconds it took."""
        cfg, start = self.config, time.perf_counter()
        width, height = cfg.warmup_camera_size
        rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)  # (H, W, 3)
        types = [CompressedImage if topic.endswith("/compressed") else Image for topic in cfg.camera_topics]
        payloads = [serialize_message(camera_message(rgb, kind)) for kind in types]
        for _ in range(passes):
            messages = [deserialize_checked(deserialize_message, data, kind) for data, kind in zip(payloads, types)]
            images = [message_to_array(msg) for msg in messages]
            result = self.engine.forward(self.engine.prepare([(images, cfg.default_instruction)]))
            features = result.features[0].float().cpu().numpy()  # (L, D)
            features_to_cdr(features, messages[-1].header, cfg.feature_dtype)
            for part in self.parts:
                part.warm_up(result)
        return time.perf_counter() - start

    def make_parts(self, cfg) -> list[NodePart]:
        """The parts this node holds for ``cfg`` (before the model loads; ``load_model`` attaches them)."""
        return []

    def load_model(self, cfg) -> FeatureEngine:
        """The engine, warmed up for this node's inputs, or ValueError naming the parameter at fault."""
        raise NotImplementedError

    def release(self) -> None:
        """Drop the model (and what the parts hold of it) and return its GPU memory to the driver."""
        for part in self.parts:
            part.release()
        if self.engine is None:
            return
        device = self.engine.device
        before = torch.cuda.memory_reserved(device) if device.type == "cuda" else 0
        self.engine = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            after = torch.cuda.memory_reserved(device)
            self.get_logger().info(
                f"released the engine: GPU memory reserved {before / 2**20:.0f} -> {after / 2**20:.0f} MiB"
            )
        else:
            self.get_logger().info("released the engine")

    def stop(self) -> None:
        """Stop the inference worker (it finishes the frame set in hand); the model stays loaded."""
        self._stop.set()
        self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            self._worker = None

    def _on_set_parameters(self, params):
        from rcl_interfaces.msg import SetParametersResult

        if self.config is None:
            return SetParametersResult(successful=True)
        names = {ros_name(f): f.name for f in fields(self.config_cls)}
        updates = {names.get(p.name, p.name): p.value for p in params}
        try:
            candidate = self.config_cls(**{**self.config.__dict__, **updates})
            if self.engine is not None:
                check_default_instruction(candidate, self.engine)
        except (TypeError, ValueError) as err:
            return SetParametersResult(successful=False, reason=str(err))
        self.config = candidate
        if self._sync is not None:
            self._sync.slop_ns = int(candidate.sync_slop_s * 1e9)
        return SetParametersResult(successful=True)

    # -- inputs (executor thread) ------------------------------------------------------------------

    def _on_image(self, camera: int, data: bytes) -> None:
        self.input_rates[camera].tick()
        self.counters.add("frames_received")
        try:
            stamp = cdr_header_stamp_ns(data)
        except BadImage as err:
            self.counters.add(f"rejected_{err.reason}")
            self._warn(err.reason, f"camera {self.config.camera_topics[camera]}: {err}")
            return
        unmatched_before = self._sync.unmatched
        frame_set = self._sync.add(Frame(camera, stamp, data, time.monotonic_ns()))
        if self._sync.unmatched > unmatched_before:
            self.counters.add("dropped_unsynchronised", self._sync.unmatched - unmatched_before)
            if frame_set is None:
                self._warn(
                    "unsynchronised",
                    f"camera frames do not pair within sync_slop_s={self.config.sync_slop_s}"
                    f" across {self.config.camera_topics}",
                )
        if frame_set is None:
            return
        if self._too_old(frame_set.stamp_ns):
            self.counters.add("dropped_stale")
            self._warn("stale", f"frame set older than max_frame_age_s={self.config.max_frame_age_s} dropped")
        elif self._slot.put(frame_set):
            self.counters.add("dropped_superseded")

    def _on_instruction(self, msg: String) -> None:
        if self.engine is None:  # released: nothing to check it against, and nothing uses it
            return
        text, keeping = msg.data, quote(self._instruction)
        try:  # length first (a long text costs nothing more), then non-empty and no special tokens
            check_instruction(text, self.engine.processor, self.config.max_instruction_chars)
        except InstructionRejected as err:
            self.counters.add(f"rejected_{err.reason}")
            self._warn("instruction", f"instruction {quote(text)} ignored, keeping {keeping}: {quote(str(err), 200)}")
            return
        self._instruction = text  # applies from the next frame set the worker takes

    def _too_old(self, stamp: int, limit: float | None = None) -> bool:
        limit = self.config.max_frame_age_s if limit is None else limit
        return limit > 0 and self.get_clock().now().nanoseconds - stamp > limit * 1e9

    # -- inference worker ------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            frame_set = self._slot.take(timeout=0.2)
            if frame_set is None:
                continue
            try:
                self._process(frame_set)
            except Exception as err:  # noqa: BLE001 -- one bad frame set must never stop the worker
                self.counters.add("rejected_internal_error")
                self._warn("internal", f"frame set skipped after an unexpected error: {err!r}")

    def _process(self, frame_set) -> None:
        cfg, engine = self.config, self.engine
        if engine is None:
            return
        if self._too_old(frame_set.stamp_ns):
            self.counters.add("dropped_stale")
            return
        instruction = self._instruction or cfg.default_instruction
        t0 = time.perf_counter()
        try:
            messages = [
                deserialize_checked(deserialize_message, f.payload, self._camera_types[f.camera])
                for f in frame_set.frames
            ]
            images = [message_to_array(msg) for msg in messages]
        except BadImage as err:
            self.counters.add(f"rejected_{err.reason}")
            self._warn(err.reason, f"frame set skipped: {err}")
            return
        t1 = time.perf_counter()
        try:
            inputs = engine.prepare([(images, instruction)])
        except ValueError as err:
            self.counters.add("rejected_bad_image")
            self._warn("bad_image", f"frame set skipped: {err}")
            return
        t2 = time.perf_counter()
        result = engine.forward(inputs)
        features = result.features[0].float().cpu().numpy()  # (L, D); the one host sync per frame set
        t3 = time.perf_counter()
        if not np.isfinite(features).all():
            self.counters.add("rejected_nonfinite")
            self._warn("nonfinite", "frame set skipped: the model produced NaN or Inf features")
            return
        layout = self._layout(result.layout, instruction)
        if layout != self._sent_layout:  # before the features it describes
            self._layout_pub.publish(String(data=layout_json(layout)))
            self._sent_layout = layout
        newest = messages[frame_set.frames.index(frame_set.newest)]
        self._features_pub.publish(features_to_cdr(features, newest.header, cfg.feature_dtype))  # serialised once
        t4 = time.perf_counter()
        for stage, (a, b) in {
            "decode": (t0, t1),
            "preprocess": (t1, t2),
            "model": (t2, t3),
            "publish": (t3, t4),
        }.items():
            self.latency.add(stage, (b - a) * 1000.0)
        for part in self.parts:
            part.after_features(frame_set.stamp_ns, features, result, newest.header)
        self.latency.add("total", (time.monotonic_ns() - frame_set.newest.received_ns) / 1e6)
        self.output_rate.tick()
        self.counters.add("published")

    def _layout(self, layout, instruction: str) -> dict:
        cfg = self.config
        return {
            "model_id": self.model_id,
            "feature_dim": self.engine.feature_dim,
            "feature_dtype": cfg.feature_dtype,
            "encoding": "16FC1" if cfg.feature_dtype == "float16" else "32FC1",
            "model_dtype": cfg.dtype,
            "camera_topics": list(cfg.camera_topics),
            "instruction": instruction,
            "instruction_format": self.engine.processor.describe().get("instruction_format"),
            "tokens": self.engine.facts.to_dict(),  # family, image token id, pad id, grid
            **layout.to_dict(),
        }

    # -- diagnostics -----------------------------------------------------------------------------

    def _warn(self, kind: str, text: str) -> None:
        now = time.monotonic()
        with self._warn_lock:
            self._warnings[kind] = text
            throttle = self.config.warn_throttle_s if self.config else 5.0
            if now - self._warn_last.get(kind, -1e18) < throttle:
                return
            self._warn_last[kind] = now
        self.get_logger().warning(text)

    def _publish_diagnostics(self) -> None:
        cfg = self.config
        if cfg is None or self._diag_pub is None:
            return
        with self._warn_lock:
            warnings, self._warnings = self._warnings, {}
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: features", hardware_id=self.model_id)
        status.level = DiagnosticStatus.WARN if warnings else DiagnosticStatus.OK
        status.message = "; ".join(warnings.values()) if warnings else "ok"
        extra = {key: value for part in self.parts for key, value in part.diagnostics().items()}
        if self.warmup_seconds is not None:
            extra["warmup_s"] = f"{self.warmup_seconds:.2f}"  # the configure warm-up through every serving path
        values = diagnostic_values(
            cfg,
            self.model_id,
            "active" if self._worker is not None else "inactive",
            self.engine,
            self.counters,
            self.latency,
            self.output_rate,
            self.input_rates,
            self.start_seconds,
            extra,
        )
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)
