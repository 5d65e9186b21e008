"""Which worker runs which stream: streams declare the slots they need, workers the slots they have.

Ray places the workers (actors) on nodes by their CPUs and GPUs; this table places streams on workers.
A stream stays on its worker (tracker state cannot move); it is placed again only when its worker is
lost, preferring the same worker once Ray has restarted it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from engine.errors import ConfigError

DEVICES = ("cpu", "gpu")


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One stream of the fleet, as a worker needs to run it."""

    name: str  # unique in the fleet; names its outputs (MQTT topic, metrics label)
    source: str  # what open_source takes: a path, rtsp://, synthetic:..., ...
    device: str = "cpu"  # the kind of worker slot it needs: "cpu" or "gpu"
    slots: int = 1  # slots it takes on its worker (a 1080p stream may take more than a 480p one)
    options: object = None  # per-stream run options, passed to the runner as they are (picklable)

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/+#\0 "):
            raise ConfigError(f"stream name {self.name!r} must be non-empty, without spaces, '/', '+' or '#'")
        if self.device not in DEVICES:
            raise ConfigError(f"stream {self.name}: device must be one of {DEVICES}, got {self.device!r}")
        if self.slots < 1:
            raise ConfigError(f"stream {self.name}: slots must be >= 1, got {self.slots}")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """One engine worker: the Ray resources its actor reserves and the stream slots it offers."""

    device: str = "cpu"
    slots: int = 4  # stream slots; one slot is one 640x480 stream at 30 fps by default
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"worker device must be one of {DEVICES}, got {self.device!r}")
        if self.slots < 1 or self.num_cpus < 0 or self.num_gpus < 0:
            raise ConfigError(f"a worker needs slots >= 1 and non-negative resources, got slots={self.slots}, "
                              f"num_cpus={self.num_cpus}, num_gpus={self.num_gpus}")
        if (self.device == "gpu") != (self.num_gpus > 0):
            raise ConfigError(f"a {self.device} worker must reserve {'some' if self.device == 'gpu' else 'no'} GPU "
                              f"(num_gpus={self.num_gpus})")


class SlotTable:
    """Stream slots of every worker; ``assign`` picks the worker with the most free slots of the
    stream's device (first in order on ties), or the preferred one when it has room."""

    def __init__(self, workers: Sequence[WorkerSpec]) -> None:
        if not workers:
            raise ConfigError("a fleet needs at least one worker")
        self.workers = tuple(workers)
        self._used = [0] * len(workers)
        self._where: dict[str, tuple[int, int]] = {}  # stream -> (worker, slots)

    def free(self, worker: int) -> int:
        return self.workers[worker].slots - self._used[worker]

    def worker_of(self, stream: str) -> int | None:
        placed = self._where.get(stream)
        return None if placed is None else placed[0]

    def streams_on(self, worker: int) -> list[str]:
        return [name for name, (w, _) in self._where.items() if w == worker]

    def assign(self, stream: StreamSpec, *, exclude: Collection[int] = (), prefer: int | None = None) -> int:
        """Reserve the stream's slots on a worker and return its index.

        Raises:
            ConfigError: no worker of the stream's device has room (the message says what to change).
        """
        if stream.name in self._where:
            raise ConfigError(f"stream {stream.name} is already placed on worker {self._where[stream.name][0]}")
        fits = [w for w, spec in enumerate(self.workers)
                if spec.device == stream.device and w not in exclude and self.free(w) >= stream.slots]
        if not fits:
            kind = [s for s in self.workers if s.device == stream.device]
            raise ConfigError(
                f"stream {stream.name} needs {stream.slots} {stream.device} slot(s), and no "
                f"{stream.device} worker has them free ({len(kind)} {stream.device} worker(s), "
                f"{sum(s.slots for s in kind)} slots, {len(exclude)} down); add workers or slots")
        worker = prefer if prefer in fits else max(fits, key=lambda w: (self.free(w), -w))
        self._used[worker] += stream.slots
        self._where[stream.name] = (worker, stream.slots)
        return worker

    def release(self, stream: str) -> None:
        placed = self._where.pop(stream, None)
        if placed is not None:
            self._used[placed[0]] -= placed[1]
