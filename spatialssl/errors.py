"""The errors a user can fix. The CLI prints their message alone, without a traceback."""


class SpatialSSLError(Exception):
    """Base class: a problem with the user's input, named with what to do about it."""


class ConfigError(SpatialSSLError):
    """An invalid option, recipe or override."""


class DataError(SpatialSSLError):
    """A missing, corrupt or unrecognised data set."""


class TrainingDiverged(SpatialSSLError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
