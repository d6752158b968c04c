"""The package's exceptions.

Every error panns_infer raises on purpose derives from :class:`PannsError`, so one
``except PannsError`` catches them all. Each specific error also derives from the builtin
exception a user would already catch for that kind of failure (``ValueError`` for a bad
value, ``OSError`` for a file or download problem, ...), so existing handlers keep working.

>>> from panns_infer.errors import PannsError, UnknownModelError
>>> issubclass(UnknownModelError, ValueError) and issubclass(UnknownModelError, PannsError)
True
"""

from __future__ import annotations

__all__ = [
    "PannsError",
    "UnknownModelError",
    "InvalidArgumentError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "UnsafeCheckpointError",
    "ArchitectureError",
    "AudioDecodeError",
    "InvalidAudioError",
    "LabelsError",
    "DownloadError",
    "ChecksumError",
    "OfflineError",
    "DeviceError",
    "UnsupportedOperationError",
    "PannsWarning",
    "AmbiguousArchitectureWarning",
    "OutputFileError",
    "DependencyError",
]


class PannsError(Exception):
    """Base class of every error raised by panns_infer."""


class UnknownModelError(PannsError, ValueError):
    """A checkpoint or architecture name that the registry does not know."""


class InvalidArgumentError(PannsError, ValueError):
    """An option with a value outside what it accepts (e.g. ``top_k=-1``)."""


class CheckpointError(PannsError, ValueError):
    """A checkpoint file that cannot be read or does not match its architecture."""


class CheckpointNotFoundError(PannsError, FileNotFoundError):
    """A checkpoint path that does not exist or is not a file."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose unpickling would need more than plain tensors and numpy arrays.

    Such a file could run arbitrary code when loaded; it is refused and never executed.
    """


class ArchitectureError(CheckpointError):
    """A state dict that matches no supported architecture, or not the one requested."""


class AudioDecodeError(PannsError, OSError):
    """An audio file that is missing, unreadable or not audio."""


class InvalidAudioError(PannsError, ValueError):
    """An audio array or tensor with an unusable shape, type, rate or content."""


class LabelsError(PannsError, ValueError):
    """A class-label list that is missing or malformed."""


class DownloadError(PannsError, OSError):
    """A download that failed after its retries (HTTP error, connection, timeout)."""


class ChecksumError(DownloadError):
    """A downloaded or cached file whose size or hash differs from the published one."""


class OfflineError(PannsError, ConnectionError):
    """A file is needed from the network, but offline mode is on."""


class DeviceError(PannsError, RuntimeError):
    """A requested device (e.g. ``"cuda:1"``) that this machine does not have."""


class UnsupportedOperationError(PannsError, TypeError):
    """An operation the loaded checkpoint cannot do (e.g. framewise output from a clip-level model)."""


class PannsWarning(UserWarning):
    """Base class of every warning panns_infer issues."""


class AmbiguousArchitectureWarning(PannsWarning):
    """A state dict that fits two architectures, with nothing to choose between them.

    Cnn14 and Cnn14_DecisionLevelMax have identical keys and shapes. When neither ``arch=``,
    the registry, the file's checksum nor its name says which one a file is, it is loaded as
    Cnn14 with this warning; pass ``arch=`` to choose (and silence it).
    """


class OutputFileError(PannsError, FileExistsError):
    """An output file that a run must not write into: one another tool wrote, one holding the
    records of another model or other options, one another run is writing, or one damaged
    in the middle. Nothing is written; the message names the difference and what to do."""


class DependencyError(PannsError, RuntimeError):
    """An installed dependency is older than panns_infer needs (e.g. torch < 2.6)."""
