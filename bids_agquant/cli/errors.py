"""Errors the user can act on, each carrying its BIDS-Apps exit code (interface.md).

Raise one of these anywhere between the command line and the first computation; ``cli/run.py``
prints ``str(error)`` as the single first line on stderr and exits with ``error.exit_code``. The
message names the file or option at fault and says what to do, e.g.::

    raise BadDataError("sub-01_ses-D0_flip-2_VFA.json: FlipAngle is missing",
                       fix="add the nominal flip angle in degrees to the sidecar")

Exit codes: 64 usage, 65 bad data (unreadable or inconsistent file, missing required metadata),
66 missing input (no such participant, no usable session or image), 73 cannot create output,
1 anything unexpected (including a failing pipeline node).
"""
from __future__ import annotations

__all__ = ["EX_OK", "EX_FAILURE", "EX_USAGE", "EX_DATAERR", "EX_NOINPUT", "EX_CANTCREAT",
           "AgquantError", "UsageError", "BadDataError", "MissingInputError", "OutputError",
           "NodeFailedError"]

EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_CANTCREAT = 73


class AgquantError(Exception):
    """An error with a one-line message for the user and an exit code."""

    exit_code = EX_FAILURE

    def __init__(self, message: str, fix: str | None = None):
        message = " ".join(str(message).split())          # always one line
        fix = " ".join(str(fix).split()) if fix else None
        self.message = message
        self.fix = fix
        super().__init__(message if not fix else f"{message}: {fix}")

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message}; {self.fix}"


class UsageError(AgquantError):
    """Wrong command line: an option value or a combination of options (exit 64)."""
    exit_code = EX_USAGE


class BadDataError(AgquantError):
    """An input file is unreadable, inconsistent or lacks required metadata (exit 65)."""
    exit_code = EX_DATAERR


class MissingInputError(AgquantError):
    """Required input is absent: no dataset, participant, session or image (exit 66)."""
    exit_code = EX_NOINPUT


class OutputError(AgquantError):
    """The output or work directory cannot be created or written (exit 73)."""
    exit_code = EX_CANTCREAT


class NodeFailedError(AgquantError):
    """A pipeline node crashed (exit 1); the message names the node and its crash file."""
    exit_code = EX_FAILURE
