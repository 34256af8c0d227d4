"""One line for an error a user can cause, shared by the command line and the nodes."""

from __future__ import annotations


def user_error_line(err: BaseException, limit: int | None = None) -> str:
    """The message of a user error (for a file-system error: the file and the system's reason); for any
    other exception its type too. ``limit``: at most that many characters, saying how many there were."""
    if isinstance(err, OSError) and err.strerror:
        text = f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    elif isinstance(err, ValueError):
        text = " ".join(str(err).split())
    else:
        text = f"{type(err).__name__}: {err}"
    return text if limit is None or len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
