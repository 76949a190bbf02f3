"""Errors a user can cause. Each carries a message that says what was wrong, where, and what to do.

The CLI prints `str(err)` and exits 1; the UI shows it in a message box. Nothing here imports
anything heavy. Programming errors are not StudioErrors and keep their tracebacks.
"""


class StudioError(Exception):
    """Base class: a problem the user can fix. The message is shown as is."""


class HomeError(StudioError):
    """STUDIO_HOME cannot be used (a file, unwritable, …)."""


class StoreError(StudioError):
    """studio.db is not a database we can use."""


class PresetError(StudioError):
    """A preset file is wrong: names the file, the key and what is allowed."""


class ModelError(StudioError):
    """A model reference cannot be resolved or its files are unusable."""


class DataError(StudioError):
    """Input data that yields nothing usable."""


class ConfigError(StudioError):
    """A run/estimate setting that is out of range or inconsistent."""


class RunError(StudioError):
    """A training run cannot be started, resumed or found."""


class ExportError(StudioError):
    """An export cannot be written or verified."""


class FeatureUnavailable(StudioError):
    """An optional dependency (llama-cpp-python, bitsandbytes…) is missing; says how to enable it."""


class Cancelled(StudioError):
    """The user cancelled a long job; nothing was saved."""
