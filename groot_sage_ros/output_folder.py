"""A run owns its output folder: an OS lock while it runs, and a marker that says this package wrote it.

Every command that writes a folder (``extract``, ``distill``, ``make-bag``, ``dataset-from-bag``,
``evaluate``'s report, ``tiny-checkpoint``) claims it first with ``OutputFolder.claim``:

- A folder that does not exist, or is empty, becomes this run's: the marker ``.groot-sage-output.json``
  records what kind of output it is. A non-empty folder without the marker holds someone else's files and
  is refused, naming a few of them: nothing of a user's is ever written over or deleted.
- ``.groot-sage.lock`` carries an exclusive ``flock`` for as long as the process lives (the kernel drops it
  when the process dies, even by SIGKILL), and names the holder, so a second run into the same folder
  fails at once with one line that says which process has it.
- ``overwrite`` deletes only the files of this kind that the package writes (``own_files`` patterns) in a
  folder that carries the marker of the same kind; anything else in it stays.
- ``temporary(name)`` gives a name no other run uses; ``remove_stale_temporaries`` deletes only names of
  that form (a crashed run's), never a user's ``*.tmp``.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import re
import secrets
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

MARKER = ".groot-sage-output.json"
LOCK = ".groot-sage.lock"
TEMPORARY = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.tmp$")  # .<name>.<pid>-<random>.tmp


class OutputError(ValueError):
    """An output folder this run may not use; the message names the folder and why."""


class OutputFolder:
    """A claimed output folder; the lock is held until ``release`` or the end of the process."""

    def __init__(self, path: Path, kind: str, lock_fd: int):
        self.path, self.kind, self._lock_fd = path, kind, lock_fd

    @classmethod
    def claim(cls, path: str | os.PathLike, kind: str, own_files: tuple[str, ...] = (), overwrite: bool = False,
              option: str = "--out") -> "OutputFolder":  # fmt: skip
        """Lock ``path`` for this process and make sure it is a folder of ``kind`` written by this package
        (or new, or empty). With ``overwrite``, delete the files matching ``own_files`` first."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise OutputError(f"{option} {path}: is a file, expected a folder (a new one, or one this package wrote)")
        check_owned(path, kind, option)  # before creating anything inside a folder that is not ours
        try:
            path.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise OutputError(f"{option} {path}: cannot create the folder or its lock file ({err.strerror})") from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(lock_fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown process"
            os.close(lock_fd)
            raise OutputError(f"{option} {path} is in use by another run ({holder}); wait for it to finish or "
                              "choose another folder") from None  # fmt: skip
        folder = cls(path, kind, lock_fd)
        try:
            folder._write_holder()
            check_owned(path, kind, option)  # again under the lock: another run may have got there first
            if not (path / MARKER).exists():
                write_json_atomic(path / MARKER, {"kind": kind, "written_by": "groot_sage_ros", "version": 1})
            elif overwrite:
                folder.delete_own_files(own_files)
        except BaseException:
            folder.release()
            raise
        return folder

    def _write_holder(self) -> None:
        command = " ".join(os.path.basename(a) if k == 0 else a for k, a in enumerate(sys.argv))[:200]
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        text = f"pid {os.getpid()} on {socket.gethostname()}, started {started}: {command}\n".encode()
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, text, 0)

    def delete_own_files(self, patterns: tuple[str, ...]) -> list[str]:
        """Delete the files directly in the folder whose names match ``patterns``, and stale temporaries."""
        removed = []
        for entry in sorted(self.path.iterdir()):
            if entry.is_file() and not entry.is_symlink() and any(fnmatch.fnmatch(entry.name, p) for p in patterns):
                entry.unlink()
                removed.append(entry.name)
        return removed + self.remove_stale_temporaries()

    def remove_stale_temporaries(self) -> list[str]:
        """Temporary files and staging folders of earlier runs, by their exact name pattern (safe: this run
        holds the lock, so none of them is being written)."""
        removed = []
        for entry in self.path.iterdir():
            if not TEMPORARY.match(entry.name) or entry.is_symlink():
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry.name)
        return removed

    def release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = -1


def check_owned(path: Path, kind: str, option: str = "--out") -> None:
    """OutputError unless ``path`` is missing, empty (but for our lock), or marked as a ``kind`` folder."""
    if not path.is_dir():
        return
    marker = path / MARKER
    if marker.is_file():
        try:
            found = json.loads(marker.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            found = None
        if found != kind:
            raise OutputError(f"{option} {path}: holds a {found or 'unknown'} output of this package, not a {kind}; "
                              "choose another folder")  # fmt: skip
        return
    # our lock and our temporaries (a run killed while writing the marker leaves one) do not make it foreign
    others = sorted(entry.name for entry in path.iterdir() if entry.name != LOCK and not TEMPORARY.match(entry.name))
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise OutputError(f"{option} {path}: holds files this package did not write ({shown}); nothing there is "
                          "changed. Choose a new or empty folder")  # fmt: skip


def temporary_path(final: Path) -> Path:
    """A sibling name for writing ``final`` that no other process uses (pid and a random token)."""
    return final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def write_json_atomic(path: Path, value) -> None:
    """Write JSON to a temporary name, flush it to disk, rename it into place."""
    write_bytes_atomic(path, (json.dumps(value, indent=2) + "\n").encode())


@contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """``with atomic_file(final) as tmp:`` write ``tmp``; it becomes ``final`` when the block ends, and is
    removed if the block raises, so a file that exists under its final name is complete."""
    tmp = temporary_path(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def save_safetensors(tensors: dict, path: Path, metadata: dict, final: Path) -> None:
    """safetensors' ``save_file``, with its I/O errors (no space, permission) raised as the OSError they
    are, naming ``final`` (the name the file is being written for)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as err:
        raise OSError(f"writing {final}: {' '.join(str(err).split())}") from None
