"""User-facing errors.

Anything a user can cause (a bad path, a bad config key, a corrupt file they asked for by name)
raises :class:`VideomaskError`. The CLI prints its message on one line and exits with status 2;
every other exception is a bug and keeps its traceback.
"""


class VideomaskError(Exception):
    """An error caused by user input; the message is shown as one line, without a traceback."""


class VideoDecodeError(VideomaskError):
    """A video could not be opened or decoded (corrupt, empty, unsupported, timed out)."""
