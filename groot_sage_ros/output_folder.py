"""A run owns its output folder: an OS lock while it runs, a marker that says this package wrote it, a
journal of every name it created there (``owned_files``), and the identity of the run that fills it.

Every command that writes a folder (``extract``, ``distill``, ``make-bag``, ``dataset-from-bag``,
``evaluate``'s report, ``tiny-checkpoint``, the demo) claims it first with ``OutputFolder.claim``:

- A folder that does not exist, or is empty (but for our lock), becomes this run's: the marker
  ``.groot-sage-output.json`` records what kind of output it is. A folder without the marker is someone
  else's, whatever its entries are called, and is refused, naming a few of them.
- ``.groot-sage.lock`` carries an exclusive ``flock`` for as long as the process lives (the kernel drops it
  when the process dies, even by SIGKILL) and names the holder, so a second run into the same folder fails
  at once with one line that says which process has it.
- Under the lock, the journaled temporaries of earlier (dead) runs are deleted; ``overwrite`` deletes the
  files the journal lists, and nothing else.
- ``identity``: what shapes the folder's contents (inputs, their sizes and hashes, the teacher's content
  hash, every option that changes the output), kept in ``.groot-sage-run.json``. A run continues a
  folder's unfinished work only when its identity is the same; otherwise one line names the first field
  that differs and the choices (``--overwrite``, another folder).
- ``discard_if_unused``: a run that fails before writing any output removes its bookkeeping, and the
  folder if it created it; nothing else.

Lock, marker, journal and identity are opened without following links and must be regular files: a link,
FIFO or foreign file at any of these names is refused, naming it.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import re
import shutil
import socket
import stat
import sys
import time
from pathlib import Path

from .owned_files import (
    JOURNAL,
    MARKER,
    Journal,
    OutputError,
    check_replaceable,
    describe_kind,
    is_marked,
    is_regular_file,
    open_regular,
    read_small_file,
    write_json_atomic,
)

LOCK = ".groot-sage.lock"
IDENTITY = ".groot-sage-run.json"
BOOKKEEPING = (LOCK, MARKER, JOURNAL, IDENTITY)  # never outputs themselves

__all__ = ["LOCK", "MARKER", "IDENTITY", "OutputError", "OutputFolder", "check_owned"]


class OutputFolder:
    """A claimed output folder; the lock is held until ``release`` or the end of the process."""

    def __init__(self, path: Path, kind: str, lock_fd: int, created: Path | None, option: str):
        self.path, self.kind, self._lock_fd, self.created, self.option = path, kind, lock_fd, created, option
        self.journal = Journal(path)

    @classmethod
    def claim(
        cls,
        path: str | os.PathLike,
        kind: str,
        overwrite: bool = False,
        option: str = "--out",
        identity: dict | None = None,
        names: tuple[str, ...] = (),
    ) -> "OutputFolder":
        """Lock ``path`` for this process and make sure it is a folder of ``kind`` written by this package
        (or new, or empty). ``names``: glob patterns of what the kind writes; under the lock and before
        anything is deleted, a link, FIFO or someone else's file matching one is refused, naming it (the
        patterns only ever refuse: deletion goes by the journal). ``overwrite`` deletes the files the
        package wrote there first. ``identity``: see ``settle_identity``."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise OutputError(f"{option} {path}: is a file, expected a folder (a new one, or one this package wrote)")
        check_owned(path, kind, option)  # before creating anything inside a folder that is not ours
        created = first_missing_ancestor(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"{option} {path}: cannot create the folder ({err.strerror})") from None
        lock_fd = lock_folder(path, option)
        folder = cls(path, kind, lock_fd, created, option)
        try:
            folder._write_holder()
            check_owned(path, kind, option)  # again under the lock: another run may have got there first
        except BaseException:
            folder.release()
            raise
        try:
            if not is_marked(path) or os.lstat(path / MARKER).st_size == 0:
                folder._write_marker()
            folder.check_names(names)
            folder.remove_stale_temporaries()  # dead runs' temporaries: we hold the lock
            if overwrite or not folder.outputs():  # with no outputs: only a stale identity, which binds nothing
                folder.delete_own_files(asked=overwrite)
            if identity is not None:
                folder.settle_identity(identity)
        except BaseException:
            folder.discard_if_unused()
            raise
        return folder

    def _write_holder(self) -> None:
        command = " ".join(os.path.basename(a) if k == 0 else a for k, a in enumerate(sys.argv))[:200]
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        text = f"pid {os.getpid()} on {socket.gethostname()}, started {started}: {command}\n"
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, text.encode("utf-8", "backslashreplace"), 0)

    def _write_marker(self) -> None:
        """Created exclusively (never over a link), then journaled; an empty marker left by a claim that
        died between the two is rewritten (we hold the lock, and check_owned found nothing else)."""
        marker = self.path / MARKER
        if is_regular_file(marker) and os.lstat(marker).st_size == 0:
            os.unlink(marker)
        text = json.dumps({"kind": self.kind, "written_by": "groot_sage_ros", "version": 2}) + "\n"
        fd = open_regular(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- what the package wrote here ---------------------------------------------------------------------

    def outputs(self) -> list[str]:
        """Names of the files this package wrote here and still owns, bookkeeping aside."""
        files, _ = self.journal.state()
        return sorted(name for name in files if name not in BOOKKEEPING and os.path.lexists(self.path / name))

    def delete_own_files(self, asked: bool = True) -> list[str]:
        """Delete the files the journal lists as this package's (regular files only), and stale temporaries;
        the identity goes too, so the next run records its own. Not ``asked`` (the cleanup of a folder
        without outputs), an identity that does not read as one is refused instead (``--overwrite`` takes it)."""
        removed = []
        owned = self.journal.state()[0]
        if os.path.lexists(self.path / IDENTITY) and (IDENTITY not in owned or not asked):
            self.recorded_identity()  # someone else's file at that name, or a damaged one: refused, not deleted
            if IDENTITY not in owned:
                raise OutputError(
                    f"{self.path / IDENTITY}: a file this package did not write; choose another {self.option}"
                )
        for name in self.outputs() + [IDENTITY]:
            entry = self.path / name
            if is_regular_file(entry):
                self.journal.record("gone", name)
                entry.unlink()
                removed.append(name)
        return removed + self.remove_stale_temporaries()

    def remove_stale_temporaries(self) -> list[str]:
        """The temporaries (files, or a bag's staging folder) that the journal says runs of this package
        created and never finished; safe, as this run holds the lock, so none of them is being written."""
        removed = []
        for name in sorted(self.journal.state()[1]):
            entry = self.path / name
            if os.path.lexists(entry):
                mode = os.lstat(entry).st_mode
                if stat.S_ISDIR(mode):
                    shutil.rmtree(entry)
                elif stat.S_ISREG(mode):
                    entry.unlink()
                else:  # not what we created there: leave it
                    continue
                removed.append(name)
            self.journal.record("gone", name)
        return removed

    def check_names(self, patterns: tuple[str, ...]) -> None:
        """OutputError naming the first entry matching ``patterns`` that is not a regular file of ours."""
        for entry in sorted(self.path.iterdir()):
            if entry.name not in BOOKKEEPING and any(fnmatch.fnmatchcase(entry.name, p) for p in patterns):
                check_replaceable(entry, self.journal)

    def register_folder(self, name: str) -> Path:
        """A sub-folder created for the run (a bag's staging folder), journaled as a temporary: the run removes
        it when done, a later run's cleanup if the run dies."""
        self.journal.record("temp", name)
        (self.path / name).mkdir()
        return self.path / name

    def move_in(self, source: Path, name: str) -> None:
        """Rename ``source`` (in a staging folder of ours) to ``name`` in the folder, journaled first."""
        check_replaceable(self.path / name, self.journal)
        self.journal.record("file", name)
        os.replace(source, self.path / name)

    # -- identity ---------------------------------------------------------------------------------------

    def recorded_identity(self) -> dict | None:
        return read_identity(self.path, self.option)

    def settle_identity(self, fields: dict) -> dict:
        """Check ``fields`` against the identity recorded here, and record them. Every field both have must
        be equal (a field not yet recorded is added: extract adds the teacher's hash once it is known);
        otherwise OutputError naming the first that differs. ``claim`` forgets the identity of a folder
        without outputs, so a run that wrote nothing never binds the next one."""
        recorded = self.recorded_identity()
        merged = dict(recorded or {})
        for key, value in fields.items():
            value = json.loads(json.dumps(value))  # the form it is recorded in (tuples become lists)
            if recorded is not None and key in recorded and recorded[key] != value:
                raise OutputError(
                    f"{self.option} {self.path} holds the output of a run with other inputs or "
                    f"options: {key} was {shown(recorded[key])}, this run has {shown(value)}; rerun "
                    f"with the same ones to continue, pass --overwrite to start over, or choose "
                    f"another {self.option}"
                )
            merged[key] = value
        if merged != recorded:
            write_json_atomic(self.path / IDENTITY, merged)
        return merged

    # -- the end of a run -------------------------------------------------------------------------------

    def discard_if_unused(self) -> None:
        """After a failure: if no output was written, remove the bookkeeping, and the folder (and the parents
        this run created) if now empty; then release the lock. A folder with outputs is left as it is."""
        if self._lock_fd < 0:
            return
        try:
            if not self.outputs():
                self.recorded_identity()  # a foreign file at a bookkeeping name stops the cleanup here
                self.remove_stale_temporaries()
                for name in (IDENTITY, MARKER, JOURNAL, LOCK):
                    if is_regular_file(self.path / name):
                        (self.path / name).unlink()
                remove_empty_folders(self.path, self.created)
        except (OSError, OutputError):
            pass  # best effort: what is not provably ours stays, and so does the folder
        finally:
            self.release()

    def release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = -1


def read_identity(folder: Path, option: str = "--out") -> dict | None:
    """The run identity ``folder`` records, or None; OutputError naming it when it is not one (the ranks of
    a torchrun job that did not claim the folder read it here too)."""
    path = Path(folder) / IDENTITY
    try:
        value = json.loads(read_small_file(path))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        value = None
    if not isinstance(value, dict):
        raise OutputError(
            f"{path}: not a run identity (damaged); pass --overwrite to start over or choose another {option}"
        )
    return value


def shown(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def first_missing_ancestor(path: Path) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet: what mkdir will create."""
    missing = None
    for candidate in [path, *path.parents]:
        if os.path.lexists(candidate):
            break
        missing = candidate
    return missing


def remove_empty_folders(path: Path, up_to: Path | None) -> None:
    """rmdir ``path`` and its parents up to ``up_to`` (the first folder this run created), while empty."""
    if up_to is None:
        return
    current = path
    while True:
        try:
            current.rmdir()
        except OSError:
            return
        if current == up_to or current.parent == current:
            return
        current = current.parent


def lock_folder(path: Path, option: str) -> int:
    """An open, flock-ed descriptor on the folder's lock file (created if absent, never through a link)."""
    lock = path / LOCK
    for _ in range(3):
        try:
            fd = open_regular(lock, os.O_RDWR | os.O_CREAT)
        except OutputError as err:
            raise OutputError(f"{option} {path}: {err}") from None
        except OSError as err:
            raise OutputError(f"{option} {path}: cannot create its lock file ({err.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown process"
            os.close(fd)
            raise OutputError(
                f"{option} {path} is in use by another run ({holder}); wait for it to finish or choose another folder"
            ) from None
        try:
            same = os.lstat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # a failed run removed the file between our open and our lock: take the new one
    raise OutputError(f"{option} {path}: its lock file keeps changing; is another run starting there?")


def check_owned(path: Path, kind: str, option: str = "--out") -> None:
    """OutputError unless ``path`` is missing, empty (but for our lock), or marked as a ``kind`` folder."""
    if not path.is_dir():
        return
    marker = path / MARKER
    if os.path.lexists(marker):
        mode = os.lstat(marker).st_mode
        if not stat.S_ISREG(mode):
            raise OutputError(
                f"{option} {path}: {MARKER} is {describe_kind(mode)}, not this package's marker; "
                "nothing there is changed. Choose another folder"
            )
        try:
            raw = read_small_file(marker)
            found = json.loads(raw).get("kind") if raw else "empty-marker"
        except (OSError, ValueError, AttributeError):
            found = None
        if found == "empty-marker" and only_our_lock(path, {MARKER}):
            return  # a claim that died between creating and writing the marker
        if found is None:
            raise OutputError(
                f"{option} {path}: {MARKER} is not a marker this package wrote; nothing there is "
                "changed. Choose another folder"
            )
        if found != kind:
            raise OutputError(
                f"{option} {path}: holds a {found} output of this package, not a {kind}; choose another folder"
            )
        check_lock_is_ours(path, option)
        return
    others = sorted(entry.name for entry in path.iterdir() if entry.name != LOCK)
    if others:
        shown_names = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise OutputError(
            f"{option} {path}: holds files this package did not write ({shown_names}); nothing "
            "there is changed. Choose a new or empty folder"
        )
    check_lock_is_ours(path, option)


def check_lock_is_ours(path: Path, option: str) -> None:
    """A lock file already there must be a regular file holding nothing, or a holder line this package
    wrote (``pid N on HOST, started ...``): any other file of that name is someone else's."""
    lock = path / LOCK
    if not os.path.lexists(lock):
        return
    mode = os.lstat(lock).st_mode
    if not stat.S_ISREG(mode):
        raise OutputError(
            f"{option} {path}: {LOCK} is {describe_kind(mode)}, not this package's lock; nothing "
            "there is changed. Choose another folder"
        )
    text = read_small_file(lock, 4096)
    if text and not re.match(rb"pid \d+ on ", text):
        raise OutputError(
            f"{option} {path}: {LOCK} is not a lock file this package wrote; nothing there is "
            "changed. Choose another folder"
        )


def only_our_lock(path: Path, besides: set[str]) -> bool:
    return all(entry.name in besides | {LOCK} for entry in path.iterdir())
