"""``check_writable``: every output is checked before any is written, and the check itself writes
nothing."""

from __future__ import annotations

import os
import sys

import pytest

from engine.errors import SinkError
from engine.sinks.base import check_writable
from tests.sinks.outputs import inner, run_on_tmpfs


@pytest.mark.parametrize("path, message", [
    pytest.param("{tmp}/missing-dir/r.jsonl", "directory .*missing-dir does not exist",
                 id="missing-directory"),
    pytest.param("{tmp}", "is a directory", id="a-directory"),
    pytest.param("/proc/streamseg-test.jsonl", "streamseg-test.jsonl", id="filesystem-refusing-new-files"),
])
def test_unwritable_paths_fail_naming_the_path_and_the_option(tmp_path, path, message):
    with pytest.raises(SinkError, match=message) as error:
        check_writable(path.format(tmp=tmp_path), option="--jsonl")
    assert "--jsonl" in str(error.value)
    assert not (tmp_path / "missing-dir").exists()


def test_an_existing_file_is_checked_without_being_truncated_or_touched(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"earlier results\n")
    os.utime(path, (1_000_000, 1_000_000))
    assert check_writable(path, option="--jsonl") == path
    assert path.read_bytes() == b"earlier results\n" and path.stat().st_mtime == 1_000_000


def test_a_new_path_is_checked_without_leaving_a_file(tmp_path):
    check_writable(tmp_path / "o.mp4", option="--out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(10)
def test_a_fifo_without_a_reader_is_not_opened(tmp_path):
    """Opening a FIFO for writing waits for a reader: the check must not hang on one."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert check_writable(fifo, option="--jsonl") == fifo


def test_a_full_device_passes_the_check_its_writes_fail_later():
    assert str(check_writable("/dev/full", option="--out")) == "/dev/full"


def test_a_read_only_filesystem_fails_even_for_root(tmp_path):
    """Permission bits say nothing to root; opening does. EROFS is named."""
    readonly = tmp_path / "ro"
    script = ("from engine.sinks.base import check_writable\n"
              f"check_writable({str(readonly / 'o.mp4')!r}, option='--out')\n")
    proc = inner(run_on_tmpfs(readonly, "ro", [sys.executable, "-c", script]))
    assert proc.returncode == 1 and "SinkError" in proc.stderr and "read-only file system" in proc.stderr
