"""Streams on workers by slots, and the specs that declare them."""

from __future__ import annotations

import pytest

from engine.errors import ConfigError
from engine.fleet.placement import SlotTable, StreamSpec, WorkerSpec


def _cam(name: str, **options) -> StreamSpec:
    return StreamSpec(name=name, source="synthetic:seed=1", **options)


def test_streams_spread_over_the_workers_with_the_most_room():
    table = SlotTable([WorkerSpec(slots=2), WorkerSpec(slots=2)])
    assert [table.assign(_cam(f"cam{i}")) for i in range(4)] == [0, 1, 0, 1]
    assert table.free(0) == table.free(1) == 0


def test_a_stream_goes_to_a_worker_of_its_device():
    table = SlotTable([WorkerSpec(slots=4), WorkerSpec(device="gpu", num_gpus=1, slots=4)])
    assert table.assign(_cam("hd", device="gpu")) == 1
    assert table.assign(_cam("sd")) == 0


def test_a_stream_takes_its_declared_slots():
    table = SlotTable([WorkerSpec(slots=3), WorkerSpec(slots=2)])
    assert table.assign(_cam("big", slots=3)) == 0
    assert table.free(0) == 0
    with pytest.raises(ConfigError, match="stream big2 needs 3 cpu slot"):
        table.assign(_cam("big2", slots=3))


def test_a_restarted_worker_gets_its_streams_back_and_a_lost_one_gets_none():
    table = SlotTable([WorkerSpec(slots=2), WorkerSpec(slots=2)])
    table.assign(_cam("cam1"))  # worker 0
    table.release("cam1")
    assert table.assign(_cam("cam1"), prefer=0) == 0  # sticky: back where it ran
    assert table.assign(_cam("cam2"), exclude=[1]) == 0  # worker 1 is down
    with pytest.raises(ConfigError, match="1 down"):
        table.assign(_cam("cam3"), exclude=[1])


def test_releasing_frees_the_slots_and_a_stream_is_placed_once():
    table = SlotTable([WorkerSpec(slots=1)])
    table.assign(_cam("cam1"))
    with pytest.raises(ConfigError, match="already placed on worker 0"):
        table.assign(_cam("cam1"))
    table.release("cam1")
    assert table.assign(_cam("cam2")) == 0 and table.streams_on(0) == ["cam2"]


@pytest.mark.parametrize(("make", "message"), [
    pytest.param(lambda: StreamSpec(name="", source="x"), "must be non-empty", id="empty-name"),
    pytest.param(lambda: StreamSpec(name="cam/1", source="x"), "without spaces", id="slash-in-name"),
    pytest.param(lambda: StreamSpec(name="cam1", source="x", device="tpu"), "device must be one of", id="bad-device"),
    pytest.param(lambda: StreamSpec(name="cam1", source="x", slots=0), "slots must be >= 1", id="no-slots"),
    pytest.param(lambda: WorkerSpec(device="gpu"), "must reserve some GPU", id="gpu-worker-without-gpu"),
    pytest.param(lambda: WorkerSpec(num_gpus=1), "must reserve no GPU", id="cpu-worker-with-gpu"),
    pytest.param(lambda: WorkerSpec(slots=0), "slots >= 1", id="worker-without-slots"),
    pytest.param(lambda: SlotTable([]), "at least one worker", id="no-workers"),
])
def test_bad_specs_are_one_clear_error(make, message):
    with pytest.raises(ConfigError, match=message):
        make()
