"""User-facing errors.

Anything a user can cause (a bad path, a bad config key, a corrupt file they asked for by name)
raises :class:`VideomaskError`. The CLI prints its message on one line and exits with status 2;
every other exception is a bug and keeps its traceback.
"""


class VideomaskError(Exception):
    """An error caused by user input; the message is shown as one line, without a traceback."""


class VideoDecodeError(VideomaskError):
    """A video could not be opened or decoded (corrupt, empty, unsupported, timed out)."""


def one_line(err: BaseException) -> str:
    """The message of ``err`` as one line.

    A torch DataLoader re-raises a worker's exception as the same type with the worker's whole traceback as
    its message (``Caught VideomaskError in DataLoader worker process 0. Original Traceback ...``); the
    original message is on the traceback's last line, after the exception's name.
    """
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(err).__name__
    if lines[0].startswith("Caught ") and "Traceback" in lines[1]:
        name, sep, message = lines[-1].partition(": ")
        if sep and name.replace(".", "").replace("_", "").isalnum():
            return message
        return lines[-1]
    return " ".join(lines)
