"""Student checkpoints without pickle: safetensors tensors, with everything else as JSON in its metadata.

``student.safetensors`` (what the node, ``evaluate`` and ``StudentEngine`` load)::

    model.<name>                the SageStudent state dict (weights, vocabulary, teacher statistics)
    metadata  format            "groot_sage_student", version "1"
              config            StudentConfig as JSON
              extra             JSON: held-out groups, training-set size, dataset path
              step              training steps behind it

``last.safetensors`` and ``step-N.safetensors`` (what ``distill --resume`` reads) add the AdamW state:
``optimizer.<param index>.<state name>`` tensors and the ``optimizer`` metadata (param groups as JSON).

A file says one thing, checked before any memory is allocated: the header is read; its metadata holds
exactly the keys above, ``extra`` repeats none of the record's (``config``, ``step``); the config is
validated (``StudentConfig``: types, ceilings); the model is built on the meta device and every tensor's
name, shape and kind of dtype compared with it (and, for a resume state, every optimizer tensor with the
AdamW state of that model). After reading: weights must be finite, the vocabulary tensor must be the
config's, the feature scale positive. Errors name the file and the key. Nothing in a file is ever
executed; a ``.pt`` pickle is refused by name.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..owned_files import atomic_file, save_safetensors
from .config import StudentConfig
from .model import SageStudent

SAFETENSORS_CODES = {torch.int64: "I64", torch.int32: "I32"}

FORMAT, VERSION = "groot_sage_student", "1"
STUDENT_FILE = "student.safetensors"
RESUME_FILE = "last.safetensors"
METADATA_KEYS = {"format", "version", "config", "extra", "step", "optimizer"}
EXTRA_TYPES = {"eval_groups": list, "train_size": int, "dataset": str, "objective": dict}  # what distill writes
ADAM_STATE = ("exp_avg", "exp_avg_sq", "step")  # per parameter, as torch.optim.AdamW keeps it
FLOAT_CODES = {"F16", "BF16", "F32", "F64"}


class StudentCheckpointError(ValueError):
    """A student checkpoint that cannot be used; the message names the file and the problem."""


def save_student(path: Path, model: SageStudent, extra: dict, step: int, optimizer=None) -> None:
    """Write atomically (temporary name of this process, then rename); with ``optimizer``, a resume state."""
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "config": json.dumps(asdict(model.cfg)),
        "extra": json.dumps(extra),
        "step": str(step),
    }
    if optimizer is not None:
        state = optimizer.state_dict()
        for index, values in state["state"].items():
            for name, value in values.items():
                tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value).detach().contiguous().cpu()
        metadata["optimizer"] = json.dumps(state["param_groups"])
    with atomic_file(path) as tmp:
        save_safetensors(tensors, tmp, metadata, path)


def resolve_student_file(path: str | Path) -> Path:
    """A student file, or a run folder's ``student.safetensors``; refuses pickles and missing files."""
    path = Path(path)
    if path.is_dir():
        path = path / STUDENT_FILE
    if path.suffix in (".pt", ".pth", ".pkl", ".bin"):
        raise StudentCheckpointError(
            f"{path}: a pickle-based checkpoint is never loaded (it could run code); "
            f"this version writes and reads {STUDENT_FILE} (run distill again)"
        )
    if not path.is_file():
        raise StudentCheckpointError(f"student checkpoint {path} does not exist")
    return path


def load_student(path: str | Path, device: str | torch.device = "cpu") -> tuple[SageStudent, dict]:
    """A trained student in eval mode, and its record: ``config`` (dict), ``step`` and the ``extra`` fields."""
    model, record, _ = _load(resolve_student_file(path))
    return model.to(device).eval(), record


def _load(path: Path, optimizer_state: bool = False) -> tuple[SageStudent, dict, dict[str, str]]:
    """The student on the CPU, its record, and the file's metadata (checked as the module docstring says).
    ``optimizer_state``: the file must also hold the AdamW state of this student (a resume state)."""
    header, metadata = _read_checked(path)
    config = _config(path, metadata)
    extra = _extra(path, metadata)
    step = _int(path, metadata, "step")
    with torch.device("meta"):
        model = SageStudent(config)
    expected = {f"model.{k}": (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    if optimizer_state or any(name.startswith("optimizer.") for name in header):  # a resume state read as a student
        expected.update(adam_state_layout(model))
    _check_tensors(path, header, expected)
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        state = {k.removeprefix("model."): handle.get_tensor(k) for k in header if k.startswith("model.")}
    _check_values(path, config, state)
    model.load_state_dict(state, assign=True)
    return model, {"config": asdict(config), "step": step, **extra}, metadata


def adam_state_layout(model: SageStudent) -> dict[str, tuple[tuple, torch.dtype]]:
    """Name -> (shape, dtype) of every tensor AdamW keeps for ``model`` (parameters in ``parameters()``
    order, as ``optimizer.state_dict()`` numbers them)."""
    layout = {}
    for index, param in enumerate(model.parameters()):
        layout[f"optimizer.{index}.exp_avg"] = (tuple(param.shape), torch.float32)
        layout[f"optimizer.{index}.exp_avg_sq"] = (tuple(param.shape), torch.float32)
        layout[f"optimizer.{index}.step"] = ((), torch.float32)
    return layout


def is_hyperparameter(value) -> bool:
    """A number, flag or None, or a short list of numbers (AdamW's betas): all an optimizer group holds."""
    if isinstance(value, list):
        return len(value) <= 4 and all(isinstance(v, (int, float)) for v in value)
    return isinstance(value, (int, float, bool, type(None)))


def _check_tensors(path: Path, header: dict[str, tuple[list[int], str]], expected: dict) -> None:
    """Every tensor of the file is expected, with its shape and kind of dtype (floating weights may be any
    float; integer tensors, the vocabulary, exactly their type); every expected one is there."""
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing or unexpected:
        raise StudentCheckpointError(
            f"{path}: tensors do not match the student its config describes (missing "
            f"{missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name, (shape, dtype) in expected.items():
        found_shape, code = header[name]
        if tuple(found_shape) != shape:
            raise StudentCheckpointError(f"{path}: tensor {name} has shape {list(found_shape)}, expected {list(shape)}")
        floating = code in FLOAT_CODES
        if floating != dtype.is_floating_point or (not floating and code != SAFETENSORS_CODES.get(dtype)):
            raise StudentCheckpointError(f"{path}: tensor {name} is {code}, expected {dtype}")


def _check_values(path: Path, config: StudentConfig, state: dict[str, torch.Tensor], prefix: str = "model.") -> None:
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise StudentCheckpointError(f"{path}: tensor {prefix}{name} holds NaN or infinite values")
    if "vocab" in state and state["vocab"].tolist() != list(config.vocab):
        raise StudentCheckpointError(
            f"{path}: tensor {prefix}vocab differs from the vocabulary its config records "
            "(token ids out of range or reordered)"
        )
    if "feature_std" in state and not bool((state["feature_std"] > 0).all()):
        raise StudentCheckpointError(f"{path}: tensor {prefix}feature_std has values <= 0 (a feature scale)")


def load_training_state(path: Path, model: SageStudent, optimizer) -> int:
    """Fill ``model`` and ``optimizer`` from a resume state written by ``save_student``; returns its step."""
    trained, record, metadata = _load(resolve_student_file(path), optimizer_state=True)
    if record["config"] != asdict(model.cfg):
        raise StudentCheckpointError(
            f"{path}: its student config differs from this run's (the data or the "
            "shape options changed); start a new run folder"
        )
    groups = _json(path, metadata, "optimizer", list)
    count = len(list(model.parameters()))
    if (
        len(groups) != 1
        or not isinstance(groups[0], dict)
        or groups[0].get("params") != list(range(count))
        or not all(is_hyperparameter(v) for k, v in groups[0].items() if k != "params")
    ):
        raise StudentCheckpointError(
            f"{path}: metadata 'optimizer' is not the one AdamW group of {count} parameters this student has"
        )
    state: dict[int, dict] = {}
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        for key in handle.keys():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = handle.get_tensor(key)
    _check_values(
        path, model.cfg, {f"{i}.{n}": t for i, values in state.items() for n, t in values.items()}, prefix="optimizer."
    )
    model.load_state_dict(trained.state_dict())
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError) as err:
        raise StudentCheckpointError(f"{path}: optimizer state does not fit this run ({err})") from None
    return record["step"]


def _read_checked(path: Path) -> tuple[dict[str, tuple[list[int], str]], dict[str, str]]:
    """(tensor name -> (shape, dtype code), metadata) from the header alone."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            header = {k: (handle.get_slice(k).get_shape(), handle.get_slice(k).get_dtype()) for k in handle.keys()}
    except (SafetensorError, OSError) as err:
        raise StudentCheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    if metadata.get("format") != FORMAT or metadata.get("version") != VERSION:
        raise StudentCheckpointError(
            f"{path}: not a groot_sage_ros student checkpoint (format "
            f"{metadata.get('format')!r}, version {metadata.get('version')!r})"
        )
    unknown = sorted(set(metadata) - METADATA_KEYS)
    if unknown:
        raise StudentCheckpointError(
            f"{path}: metadata {unknown[0]!r} is not one a student checkpoint has "
            f"(expected only {sorted(METADATA_KEYS)})"
        )
    return header, metadata


def _extra(path: Path, metadata: dict) -> dict:
    """The ``extra`` record: it may not repeat the config or the step, and its known fields have their types."""
    extra = _json(path, metadata, "extra", dict)
    for key in ("config", "step"):
        if key in extra:
            raise StudentCheckpointError(
                f"{path}: metadata 'extra' repeats {key!r}, which the file records once, "
                f"in metadata {key!r}; refusing a checkpoint that says two things"
            )
    for key, kind in EXTRA_TYPES.items():
        if key in extra and (not isinstance(extra[key], kind) or isinstance(extra[key], bool)):
            raise StudentCheckpointError(f"{path}: metadata 'extra' field {key!r} is not a {kind.__name__}")
    if not all(isinstance(g, str) for g in extra.get("eval_groups", [])):
        raise StudentCheckpointError(f"{path}: metadata 'extra' field 'eval_groups' holds something other than names")
    return extra


def _config(path: Path, metadata: dict) -> StudentConfig:
    try:
        return StudentConfig.from_dict(_json(path, metadata, "config", dict))
    except ValueError as err:
        raise StudentCheckpointError(f"{path}: {err}") from None


def _json(path: Path, metadata: dict, key: str, kind: type):
    try:
        value = json.loads(metadata[key])
    except (KeyError, ValueError):
        raise StudentCheckpointError(f"{path}: metadata {key!r} is missing or not JSON") from None
    if not isinstance(value, kind):
        raise StudentCheckpointError(f"{path}: metadata {key!r} is not a JSON {kind.__name__}")
    return value


def _int(path: Path, metadata: dict, key: str) -> int:
    try:
        value = int(metadata[key])
    except (KeyError, ValueError):
        value = -1
    if not 0 <= value < 2**63:
        raise StudentCheckpointError(f"{path}: metadata {key!r} is missing or not a whole number >= 0")
    return value
