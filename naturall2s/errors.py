"""Errors a user can cause. Each message is fit to show as is (CLI, studio)."""


class NaturalL2SError(Exception):
    """Base of every error the user can cause; the CLI prints ``error: <message>`` and exits 2."""


class NotAVideoError(NaturalL2SError):
    """The file is not a readable video (missing, empty, corrupt, audio-only, an image, ...)."""


class NoVideoStreamError(NotAVideoError):
    """The file decodes but holds no video stream (e.g. audio only)."""


class NoAudioError(NaturalL2SError):
    """An operation needed an audio track (a reference for a metric, say) and the file has none."""


class ClipTooLongError(NaturalL2SError):
    """The clip is longer than the configured maximum duration."""


class NoFaceError(NaturalL2SError):
    """No face was found in (enough of) the clip's frames."""


class CheckpointError(NaturalL2SError):
    """A checkpoint is missing, corrupt, or does not match the code."""


class DataError(NaturalL2SError):
    """A dataset folder or cache is missing or malformed."""
