"""Every user-facing error subclasses AgquantError and carries its exit code; the CLI maps by class."""
from __future__ import annotations

import inspect

import pytest

from bids_agquant import errors
from bids_agquant.cli import run
from bids_agquant.cli.plugin import PluginSettingsError
from bids_agquant.qmri import relaxivity
from bids_agquant import group


@pytest.mark.parametrize("cls, code", [
    (errors.UsageError, 64), (errors.BadDataError, 65), (errors.MissingInputError, 66),
    (errors.OutputError, 73), (errors.NodeFailedError, 1), (errors.UnknownAgentError, 65),
    (errors.GroupInputError, 66), (errors.GroupDataError, 65), (PluginSettingsError, 64)])
def test_exit_code_by_class(cls, code):
    exc = cls("something  is\nwrong", fix="do this")
    assert isinstance(exc, errors.AgquantError)
    assert run._exit_code_of(exc) == code == exc.exit_code
    assert str(exc) == "something is wrong; do this"


def test_every_public_error_subclasses_the_base():
    public = [getattr(errors, n) for n in errors.__all__ if inspect.isclass(getattr(errors, n))]
    assert len(public) == 9 and all(issubclass(c, errors.AgquantError) for c in public)


def test_historical_standard_bases_are_kept():
    assert issubclass(errors.GroupInputError, FileNotFoundError)
    assert issubclass(errors.GroupDataError, ValueError)
    assert issubclass(PluginSettingsError, ValueError)
    assert group.GroupInputError is errors.GroupInputError
    assert group.GroupDataError is errors.GroupDataError


def test_qmri_unknown_agent_is_bad_data_and_names_do_not_count():
    assert run._exit_code_of(relaxivity.UnknownAgentError("unknown contrast agent")) == 65
    assert run._exit_code_of(ValueError("x")) is None

    class GroupDataError(ValueError):           # same name, not ours: unexpected (exit 1)
        exit_code = 65

    assert run._exit_code_of(GroupDataError("x")) is None
