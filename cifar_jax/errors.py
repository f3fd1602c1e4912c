"""User-facing errors.

Every problem a user can fix (a config typo, a missing data file, a broken checkpoint)
is raised as a :class:`CifarJaxError` whose message names the problem and the fix. The
command-line entry points print that message without a traceback (unless ``--debug``)
and exit non-zero.
"""


class CifarJaxError(Exception):
    """A problem the user can fix; the message says what and how."""


class ConfigError(CifarJaxError):
    """An invalid or inconsistent config value."""


class DataError(CifarJaxError):
    """Missing, truncated or corrupt data files, or a failed download."""


class CheckpointError(CifarJaxError):
    """A checkpoint that cannot be read or does not match the config."""


class TrainingError(CifarJaxError):
    """Training cannot go on (for example a NaN loss)."""
