"""Every error a user can meet, each carrying its BIDS-Apps exit code (interface.md).

One base, :class:`AgquantError`, with a class attribute ``exit_code``. Raise a subclass anywhere
in the package (the BIDS layer, the group level, the plugin settings); ``cli/run.py`` prints
``str(error)`` as the single first line on stderr and exits with ``error.exit_code``, choosing
by class, never by name. The message names the file or option at fault and says what to do,
e.g.::

    raise BadDataError("sub-01_ses-D0_flip-2_VFA.json: FlipAngle is missing",
                       fix="add the nominal flip angle in degrees to the sidecar")

Exit codes: 64 usage, 65 bad data (unreadable or inconsistent file, missing required metadata),
66 missing input (no such participant, no usable session or image), 73 cannot create output,
1 anything unexpected (including a failing pipeline node).

This module sits at the package root and imports nothing of the package, so every layer can
use it. The one exception is ``qmri/``, which imports only numpy, scipy and the standard library:
:class:`bids_agquant.qmri.relaxivity.UnknownAgentError` stays a plain ``KeyError`` there, and
the caller that meets it on the way to the user (``bids/layout.py``, which checks every
session's agent before any computation) converts it into :class:`UnknownAgentError` below.
"""
from __future__ import annotations

__all__ = ["EX_OK", "EX_FAILURE", "EX_USAGE", "EX_DATAERR", "EX_NOINPUT", "EX_CANTCREAT",
           "AgquantError", "UsageError", "BadDataError", "MissingInputError", "OutputError",
           "NodeFailedError", "UnknownAgentError", "GroupInputError", "GroupDataError"]

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


class UnknownAgentError(BadDataError):
    """A session names a contrast agent the relaxivity registry does not know, and no
    ``--relaxivity`` override was given (exit 65). Raised from qmri's own
    :class:`bids_agquant.qmri.relaxivity.UnknownAgentError` (see the module docstring)."""


# The group level's errors keep their historical standard-library bases, so code catching
# FileNotFoundError / ValueError around the group level behaves as before.

class GroupInputError(MissingInputError, FileNotFoundError):
    """No participant output to analyse at the group level (exit 66)."""


class GroupDataError(BadDataError, ValueError):
    """A participant table or participants.tsv cannot be read at the group level (exit 65)."""
