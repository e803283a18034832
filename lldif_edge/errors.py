"""One small exception family for user errors; the CLI alone turns them into a message and an exit code."""


class LldifError(Exception):
    """A user-facing error: bad input, bad package, missing device. The message is one line."""


class DataError(LldifError):
    """A data folder, image or video that cannot be used."""


class PackageError(LldifError):
    """A model package or checkpoint that is missing, tampered with or inconsistent."""


class BackendError(LldifError):
    """A runtime backend or device that is not available."""
