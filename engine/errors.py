"""One exception hierarchy. A ``StreamsegError`` is a user's mistake or an input's fault: its message
names the input and the fix, and the CLI prints it as one line without a traceback. Anything else is a
bug in streamseg and keeps its traceback."""

from __future__ import annotations


class StreamsegError(Exception):
    """Base of every error a user can cause and fix."""


class ConfigError(StreamsegError):
    """An option or configuration value is invalid."""


class UnknownTrackError(ConfigError):
    """A prompt refines, or a removal names, an object id that is not tracked."""


class SourceError(StreamsegError):
    """A video source cannot be opened, decoded or reached."""


class SinkError(StreamsegError):
    """An output cannot be written."""


class WeightsError(StreamsegError):
    """A weights, ONNX or engine file is missing, corrupt, or for another model."""


class DownloadError(WeightsError):
    """An explicit weights download failed or its checksum did not match."""


class DatasetError(StreamsegError):
    """A training dataset (a ``--collect`` folder, COCO JSON, YOLO-seg layout) is missing, empty or inconsistent."""


class BackendError(StreamsegError):
    """A compute backend (ONNX Runtime, TensorRT, CUDA) is missing or refused the model."""


class StreamExists(ConfigError):
    """A stream of that name is already running (``streamseg serve``)."""


class NoSuchStream(ConfigError):
    """No stream of that name (``streamseg serve``)."""
