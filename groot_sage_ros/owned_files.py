"""What the package wrote in an output folder, and the writes that keep that record true.

Every output folder carries ``.groot-sage-journal.jsonl``: one JSON line per event, appended (``O_APPEND``,
so the ranks of a torchrun job can share it) before the event happens, and flushed to disk with the
files it describes (``Journal.sync``, where a command syncs its outputs):

    {"op": "temp", "name": ".shard-00003.safetensors.4711-0a1b2c3d.tmp"}   about to create a temporary
    {"op": "file", "name": "shard-00003.safetensors"}                     about to rename it into place
    {"op": "gone", "name": "..."}                                          removed (a temporary or a file)

A name counts as the package's only while the journal says so. Cleanup deletes only journaled temporaries
(never a name that merely looks like one), ``--overwrite`` only journaled files, and a write refuses to
replace a file the journal does not list. Nothing here follows a symbolic link: files are created with
``O_EXCL | O_NOFOLLOW``, and a link, FIFO or folder where a file of ours should be is refused, naming it.

``save_safetensors`` writes the safetensors format itself, with a header in a fixed order (the library's
writer orders the metadata differently from run to run), so identical inputs give identical bytes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

MARKER = ".groot-sage-output.json"
JOURNAL = ".groot-sage-journal.jsonl"
TEMPORARY = re.compile(r"^\..+\.\d+-[0-9a-f]{8}\.tmp$")  # .<name>.<pid>-<random>.tmp: what temporary_path makes
OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # O_NONBLOCK: opening a FIFO must not hang


class OutputError(ValueError):
    """An output folder or file this run may not use; the message names it and says why."""


def describe_kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device or special file"


def open_regular(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that never follows a link and refuses anything but a regular file, naming ``path``."""
    try:
        fd = os.open(path, flags | OPEN_FLAGS, mode)
    except OSError as err:
        if os.path.islink(path):
            raise OutputError(f"{path}: is a symbolic link; the package never follows one (remove it)") from None
        if err.filename is None:
            err.filename = str(path)
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise OutputError(f"{path}: is {describe_kind(info.st_mode)}, expected a regular file written by this package")
    if flags & (os.O_WRONLY | os.O_RDWR) and info.st_nlink > 1:  # writing in place would write into the other names
        os.close(fd)
        raise OutputError(f"{path}: has {info.st_nlink - 1} other hard link(s); refusing to write through it")
    return fd


def read_small_file(path: Path, limit: int = 1 << 20) -> bytes:
    """A bookkeeping file's bytes, opened without following links; ``limit`` bounds what a hostile file costs."""
    fd = open_regular(path, os.O_RDONLY)
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)


def is_regular_file(path: Path) -> bool:
    """Whether ``path`` itself (not what a link points to) is a regular file."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def is_marked(folder: Path) -> bool:
    """Whether ``folder`` carries this package's marker as a regular file (a link or FIFO does not count)."""
    return is_regular_file(folder / MARKER)


def plain_name(name) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\0" not in name


class Journal:
    """The journal of one folder (see the module docstring)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / JOURNAL

    def record(self, op: str, name: str) -> None:
        line = (json.dumps({"op": op, "name": name}) + "\n").encode()
        fd = open_regular(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line)  # one write of a short line: whole, even beside another process's
        finally:
            os.close(fd)

    def sync(self) -> None:
        """Flush the journal to disk (with the outputs it lists, before a manifest says they are complete)."""
        if os.path.lexists(self.path):
            fd = open_regular(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def state(self) -> tuple[set[str], set[str]]:
        """(files the package wrote and still owns, temporaries created and not yet gone). A file whose
        lines are not all well-formed events (a torn last line aside: a write cut short) is not a journal of
        ours: OutputError naming it. A line whose name is not a plain file name never makes a name ours."""
        files: set[str] = set()
        temporaries: set[str] = set()
        try:
            lines = read_small_file(self.path, 64 << 20).decode("utf-8", "replace").split("\n")
        except FileNotFoundError:
            return files, temporaries
        for number, line in enumerate(lines, 1):
            try:
                event = json.loads(line)
                op, name = event["op"], event["name"]
            except (ValueError, KeyError, TypeError):
                if number == len(lines) and (number > 1 or not line):  # the last, unterminated line: a torn append
                    continue
                raise OutputError(
                    f"{self.path}: line {number} is not an event of this package's journal; "
                    "refusing to use the folder (choose another)"
                ) from None
            if not plain_name(name):
                continue
            if op == "file":
                files.add(name)
            elif op == "temp" and TEMPORARY.match(name):  # both journaled and of the form we make
                temporaries.add(name)
            elif op == "gone":
                files.discard(name)
                temporaries.discard(name)
        return files, temporaries

    def owns(self, name: str) -> bool:
        return name in self.state()[0]


def journal_of(folder: Path) -> Journal | None:
    """The folder's journal when the folder is one of ours (marked), else None."""
    return Journal(folder) if is_marked(folder) else None


def check_replaceable(final: Path, journal: Journal | None) -> None:
    """OutputError unless ``final`` is absent or a regular file this package wrote (per ``journal``)."""
    try:
        info = os.lstat(final)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(info.st_mode):
        raise OutputError(
            f"{final}: is {describe_kind(info.st_mode)} where this package writes a file; nothing "
            "was written (remove it or choose another folder)"
        )
    if journal is not None and not journal.owns(final.name):
        raise OutputError(
            f"{final}: a file this package did not write is in the way; nothing was written (move it "
            "or choose another folder)"
        )


def temporary_path(final: Path) -> Path:
    """A sibling name for writing ``final`` that no other process uses (pid and a random token)."""
    return final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


@contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """``with atomic_file(final) as tmp:`` write ``tmp``; it becomes ``final`` when the block ends, and is
    removed if the block raises, so a file that exists under its final name is complete. In a folder of
    ours, the temporary and the file are journaled first, and ``final`` may only replace a file of ours."""
    final = Path(final)
    journal = journal_of(final.parent)
    check_replaceable(final, journal)
    tmp = temporary_path(final)
    if journal is not None:
        journal.record("temp", tmp.name)
    os.close(open_regular(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL))  # ours: the writer below opens it by name
    try:
        yield tmp
        if journal is not None:
            journal.record("file", final.name)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if journal is not None:
            journal.record("gone", tmp.name)


def open_append(path: Path):
    """A text file of ours opened for appending (created, and journaled, if absent)."""
    journal = journal_of(path.parent)
    check_replaceable(path, journal)
    if journal is not None and not journal.owns(path.name):
        journal.record("file", path.name)
    return os.fdopen(open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a", encoding="utf-8")


def check_user_file(path) -> Path:
    """``write_user_file``'s refusals, early (before the work whose result it holds)."""
    path = Path(path)
    if journal_of(path.parent) is not None and os.path.lexists(path):
        raise OutputError(f"{path}: is in an output folder of this package and already exists; choose another path")
    check_replaceable(path, None)  # a link or FIFO
    return path


def write_user_file(path: Path, value) -> None:
    """A file whose path the user named (``--json``, ``bench --out``), as JSON: written atomically, never
    through a link, and never over a file in an output folder of this package (a report must not replace
    a dataset's manifest); elsewhere it replaces the regular file the user named."""
    path = check_user_file(path)
    if journal_of(path.parent) is not None:  # a new name in one of our folders: the user's file, not journaled
        check_replaceable(path, None)
        data = (json.dumps(value, indent=2) + "\n").encode()
        fd = open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return
    write_json_atomic(path, value)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """``data`` at ``path`` atomically and durably (the file, and in a folder of ours its journal)."""
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    journal = journal_of(path.parent)
    if journal is not None:
        journal.sync()


def write_json_atomic(path: Path, value) -> None:
    """Write JSON (keys in a fixed order) to a temporary name, flush it to disk, rename it into place."""
    write_bytes_atomic(path, (json.dumps(value, indent=2) + "\n").encode())


# -- safetensors, byte-reproducible -------------------------------------------------------------------------

SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}


def data_order(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Wider elements first, then by name (as the library lays them out): every tensor's data is aligned."""
    return sorted(tensors, key=lambda name: (-tensors[name].element_size(), name))


def safetensors_bytes_header(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The 8-byte length and the JSON header (sorted keys, padded to 8 bytes) for ``data_order``."""
    header: dict = {"__metadata__": {k: metadata[k] for k in sorted(metadata)}} if metadata else {}
    offset = 0
    for name in data_order(tensors):
        tensor = tensors[name]
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str], final: Path) -> None:
    """``tensors`` (CPU) in the safetensors format at ``path``, the same bytes for the same inputs; an I/O
    error (no space, permission) is the OSError it is, naming ``final``."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    try:
        with open(path, "wb") as handle:
            handle.write(safetensors_bytes_header(tensors, metadata))
            for name in data_order(tensors):
                if tensors[name].numel():
                    handle.write(tensors[name].reshape(-1).view(torch.uint8).numpy().data)
    except OSError as err:
        raise OSError(err.errno, f"writing {final}: {err.strerror}") from None
