"""The two kinds of failure the CLI tells apart: bad input (exit 2) and runtime failure (exit 1)."""


class UsageError(ValueError):
    """Bad input from the user: an argument, a file or a device that is not what is allowed."""


class MeasurementError(RuntimeError):
    """The measurement itself failed at run time (a kernel, a driver, a write)."""
