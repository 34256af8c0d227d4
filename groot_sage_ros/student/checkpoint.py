"""Student checkpoints without pickle: safetensors tensors, with everything else as JSON in its metadata.

``student.safetensors`` (what the node, ``evaluate`` and ``StudentExtractor`` load)::

    model.<name>                the SageStudent state dict (weights, vocabulary, teacher statistics)
    metadata  format            "groot_sage_student", version "1"
              config            StudentConfig as JSON
              extra             JSON: held-out groups, training-set size, dataset path
              step              training steps behind it

``last.safetensors`` and ``step-N.safetensors`` (what ``distill --resume`` reads) add the AdamW state:
``optimizer.<param index>.<state name>`` tensors and the ``optimizer`` metadata (param groups as JSON).

A file is checked before any memory is allocated: the header is read, the config validated
(``StudentConfig``: types, ceilings), the model built on the meta device and every tensor name and shape
compared with it. Nothing in a file is ever executed; a ``.pt`` pickle is refused by name.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..output_folder import atomic_file, save_safetensors
from .config import StudentConfig
from .model import SageStudent

FORMAT, VERSION = "groot_sage_student", "1"
STUDENT_FILE = "student.safetensors"
RESUME_FILE = "last.safetensors"


class StudentCheckpointError(ValueError):
    """A student checkpoint that cannot be used; the message names the file and the problem."""


def save_student(path: Path, model: SageStudent, extra: dict, step: int, optimizer=None) -> None:
    """Write atomically (temporary name of this process, then rename); with ``optimizer``, a resume state."""
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "version": VERSION, "config": json.dumps(asdict(model.cfg)),
                "extra": json.dumps(extra), "step": str(step)}  # fmt: skip
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
        raise StudentCheckpointError(f"{path}: a pickle-based checkpoint is never loaded (it could run code); "
                                     f"this version writes and reads {STUDENT_FILE} (run distill again)")  # fmt: skip
    if not path.is_file():
        raise StudentCheckpointError(f"student checkpoint {path} does not exist")
    return path


def load_student(path: str | Path, device: str | torch.device = "cpu") -> tuple[SageStudent, dict]:
    """A trained student in eval mode, and its record: ``config`` (dict), ``step`` and the ``extra`` fields."""
    model, record, _ = _load(resolve_student_file(path))
    return model.to(device).eval(), record


def _load(path: Path) -> tuple[SageStudent, dict, dict[str, str]]:
    """The student on the CPU, its record, and the file's metadata (checked as ``load_student`` says)."""
    tensors, metadata = _read_checked(path)
    config = _config(path, metadata)
    with torch.device("meta"):
        model = SageStudent(config)
    expected = {f"model.{k}": tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v) for k, v in tensors.items() if k.startswith("model.")}
    if found != expected:
        missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        wrong = sorted(k for k in set(found) & set(expected) if found[k] != expected[k])
        raise StudentCheckpointError(f"{path}: tensors do not match the student its config describes (missing "
                                     f"{missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]})")  # fmt: skip
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        state = {k.removeprefix("model."): handle.get_tensor(k) for k in found}
    for name, tensor in model.state_dict().items():  # floating weights may be any float; ids stay integers
        stored = state[name].dtype
        if stored.is_floating_point != tensor.dtype.is_floating_point or (
                not stored.is_floating_point and stored != tensor.dtype):  # fmt: skip
            raise StudentCheckpointError(f"{path}: tensor model.{name} is {stored}, expected {tensor.dtype}")
    model.load_state_dict(state, assign=True)
    record = {"config": asdict(config), "step": _int(path, metadata, "step"), **_json(path, metadata, "extra", dict)}
    return model, record, metadata


def load_training_state(path: Path, model: SageStudent, optimizer) -> int:
    """Fill ``model`` and ``optimizer`` from a resume state written by ``save_student``; returns its step."""
    trained, record, metadata = _load(resolve_student_file(path))
    if record["config"] != asdict(model.cfg):
        raise StudentCheckpointError(f"{path}: its student config differs from this run's (the data or the "
                                     "shape options changed); start a new run folder")  # fmt: skip
    groups = _json(path, metadata, "optimizer", list)
    state: dict[int, dict] = {}
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        for key in handle.keys():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = handle.get_tensor(key)
    model.load_state_dict(trained.state_dict())
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError) as err:
        raise StudentCheckpointError(f"{path}: optimizer state does not fit this run ({err})") from None
    return record["step"]


def _read_checked(path: Path) -> tuple[dict[str, list[int]], dict[str, str]]:
    """(tensor name -> shape, metadata) from the header alone."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            shapes = {k: handle.get_slice(k).get_shape() for k in handle.keys()}
    except (SafetensorError, OSError) as err:
        raise StudentCheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    if metadata.get("format") != FORMAT or metadata.get("version") != VERSION:
        raise StudentCheckpointError(f"{path}: not a groot_sage_ros student checkpoint (format "
                                     f"{metadata.get('format')!r}, version {metadata.get('version')!r})")  # fmt: skip
    return shapes, metadata


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
        return int(metadata[key])
    except (KeyError, ValueError):
        raise StudentCheckpointError(f"{path}: metadata {key!r} is missing or not a whole number") from None
