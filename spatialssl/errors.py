"""The errors a user can fix. The CLI prints their message alone, without a traceback."""
import reprlib

_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlevel = 60, 60, 3
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 6


def shown(value) -> str:
    """``repr(value)`` cut short (long strings, long or deep lists and mappings): a message quoting what a
    user gave stays one readable line whatever they gave."""
    return _SHORT.repr(value)


class SpatialSSLError(Exception):
    """Base class: a problem with the user's input, named with what to do about it."""


class ConfigError(SpatialSSLError):
    """An invalid option, recipe or override."""


class MissingPackage(ConfigError):
    """An optional package a setting needs is not installed (or cannot be imported here)."""


class DataError(SpatialSSLError):
    """A missing, corrupt or unrecognised data set."""


class MissingSplit(DataError):
    """The data has no split of that name. ``what`` says so alone, for a caller that explains what it needs."""

    def __init__(self, what: str, advice: str):
        super().__init__(f"{what}; {advice}")
        self.what, self.advice = what, advice

    def __reduce__(self):  # one process of a torchrun job hands it to the others (data.stream's listing)
        return MissingSplit, (self.what, self.advice)


class Interrupted(SpatialSSLError):
    """A run stopped on a signal (SIGTERM, SIGUSR1, Ctrl-C) after writing a checkpoint that resumes where it
    stopped; the CLI exits with ``exit_code``, sysexits' EX_TEMPFAIL ("try again later"), which a job script that
    requeues can test for."""
    exit_code = 75


class TrainingDiverged(SpatialSSLError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def optional_import(module: str, extra: str, purpose: str):
    """``module``, or one line saying which extra of spatialssl installs it: the core needs neither
    scipy (signals) nor matplotlib (figures), so ``import spatialssl`` stays light."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingPackage(f"{purpose} needs the '{module.split('.')[0]}' package: pip install "
                          f"'spatialssl[{extra}]'") from None


def first_line(err: Exception) -> str:
    """A library's exception in one line for an error message: its first line, or its type when it has none."""
    return str(err).splitlines()[0] if str(err) else type(err).__name__


class SpatialSSLWarning(UserWarning):
    """A setting that would quietly spoil a run; the run goes on with what the message says."""


def warn(message: str) -> None:
    """The one way to warn: a Python warning, so callers and tests can capture or silence it and
    the default filter shows each distinct message once (the CLI prints it as one line)."""
    import warnings

    warnings.warn(message, SpatialSSLWarning, stacklevel=2)
