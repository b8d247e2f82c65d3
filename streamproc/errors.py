"""Typed errors of streamproc. Each carries the reason a user needs to act on it."""


class StreamprocError(Exception):
    """Base class of every error streamproc raises on purpose."""


class InvalidEvent(StreamprocError):
    """An input record was refused before any plugin saw it (bad JSON, schema, limits).

    ``reason`` is a short human sentence, e.g. ``"image: not a PNG or JPEG (first bytes
    0x47 0x49)"``. Refused events go to the dead-letter topic with this reason.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidInput(InvalidEvent):
    """A plugin refused an event in ``prepare`` (the event is valid, but not for it)."""


class MediaError(InvalidInput):
    """Image or audio bytes could not be decoded safely (corrupt, truncated, too big)."""


class StateError(StreamprocError):
    """A plugin's ``state_key`` or ``update_state`` raised; the event fails for that plugin."""


class PartitionFenced(StreamprocError):
    """This worker may no longer write for an input partition: another member of its
    consumer group owns it now. Its unsent batches must be dropped uncommitted; the owner
    processes them again from the committed offset. ``sink`` names who refused the write
    (``kafka``: the transaction was fenced; ``redis``: the partition's state was claimed)."""

    def __init__(self, partition: tuple[str, int], reason: str, sink: str = "kafka") -> None:
        super().__init__(f"{partition[0]}[{partition[1]}]: {reason}")
        self.partition = partition
        self.reason = reason
        self.sink = sink


class PluginLoadError(StreamprocError):
    """A plugin's entry point could not be imported, checked or loaded."""


class ConfigError(StreamprocError):
    """The configuration (environment or YAML) is invalid."""


class StackError(StreamprocError):
    """The local Kafka + Redis stack could not be set up, started or stopped."""


class InputFileError(StreamprocError):
    """A file named on the command line cannot be read (missing, a directory, no permission)."""
