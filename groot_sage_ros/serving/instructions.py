"""One check for every instruction, whatever its source: the node's topic and its ``default_instruction``
parameter (at configure and when set at run time), ``--instruction`` on the command line, and the
instructions recorded in a bag. The same limit applies everywhere (``MAX_INSTRUCTION_CHARS`` unless a
node's ``max_instruction_chars`` says otherwise), and the same processor check (non-empty, no special
token of the family's prompt)."""

from __future__ import annotations

MAX_INSTRUCTION_CHARS = 2000


class InstructionRejected(ValueError):
    """An instruction that may not reach the model; ``reason`` names the counter (``instruction`` or
    ``instruction_too_long``), the message says why."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def check_text(text, what: str = "--instruction", limit: int = MAX_INSTRUCTION_CHARS) -> None:
    """The part of the check that needs no processor: non-empty text within ``limit`` (ValueError naming
    ``what``). A command line checks this when it parses, before it knows the checkpoint."""
    if not isinstance(text, str) or not text.strip() or len(text) > limit:
        length = f"{len(text)} characters" if isinstance(text, str) else type(text).__name__
        raise ValueError(f"{what}: expected non-empty text of at most {limit} characters, got {length}")


def check_instruction(text, processor, limit: int = MAX_INSTRUCTION_CHARS) -> str:
    """``text`` if ``processor`` may encode it, else InstructionRejected; the length is checked first, so a
    huge text costs nothing more."""
    if not isinstance(text, str):
        raise InstructionRejected("instruction", f"expected text, got {type(text).__name__}")
    if len(text) > limit:
        raise InstructionRejected(
            "instruction_too_long", f"{len(text)} characters, longer than max_instruction_chars={limit}"
        )
    try:
        processor.check_instruction(text)
    except ValueError as err:
        raise InstructionRejected("instruction", str(err)) from None
    return text
