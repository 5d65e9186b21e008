"""The kernel library as a build product, and how engine.ops chooses between it and the references.

The build tests run wherever nvcc is present (CI included, without a GPU): they prove the kernels compile
and link into one library that exports every entry point and needs nothing but the driver at run time.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.errors import ConfigError
from engine.ops import _library

ROOT = Path(__file__).resolve().parents[2]

# Shared objects a library linked with the static CUDA runtime may need: the C/C++ runtimes only.
# libcuda.so.1 (the driver) is opened by the runtime at first use, not linked.
ALLOWED_NEEDED = ("libstdc++.so", "libgcc_s.so", "libc.so", "libm.so", "libdl.so", "librt.so",
                  "libpthread.so", "ld-linux")


def _dynamic_symbols(path: Path) -> set[str]:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    out = subprocess.run([nm, "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}


def _needed(path: Path) -> list[str]:
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) is not installed")
    out = subprocess.run([readelf, "-d", str(path)], capture_output=True, text=True, check=True)
    return [line.split("[")[1].rstrip("]") for line in out.stdout.splitlines() if "(NEEDED)" in line]


# The first test to use `kernel_library` builds it where nvcc is present (conftest.py): ~20-40 s on 2
# cores from scratch, ~1 s when build/tests-kernels is up to date.
def test_library_exports_every_entry_point_and_nothing_else(kernel_library):
    symbols = _dynamic_symbols(kernel_library)
    assert set(_library.SYMBOLS) <= symbols
    # The static CUDA runtime stays private: exporting cuda* would shadow torch's libcudart.
    assert sorted(s for s in symbols if s.startswith("streamseg_")) == sorted(_library.SYMBOLS)
    assert not [s for s in symbols if s.startswith("cuda")]


def test_library_needs_only_the_driver_at_run_time(kernel_library):
    needed = _needed(kernel_library)
    assert needed, "readelf found no NEEDED entries"
    unexpected = [n for n in needed if not n.startswith(ALLOWED_NEEDED)]
    assert unexpected == [], f"{kernel_library} links {unexpected}"


def test_library_loads_without_a_gpu_and_reports_its_abi(kernel_library, monkeypatch):
    monkeypatch.setenv(_library.ENV_LIBRARY, str(kernel_library))
    _library.reset()
    try:
        loaded = _library.load()
        assert loaded.reason == "" and loaded.library is not None
        assert loaded.library.streamseg_abi_version() == _library.ABI_VERSION
        assert loaded.path == kernel_library
    finally:
        _library.reset()


# Each entry point with zero masks (or pixels) returns before touching CUDA: this calls the whole C ABI
# through ctypes, argument counts and types included, on a machine without a driver. name -> (arguments
# before device and stream, position of the count that a negative value must make invalid).
EMPTY_CALLS = {
    "streamseg_pack_masks": ((None, 0, 100, None, None), 1),
    "streamseg_mask_iou_packed": ((None, None, 0, None, None, 3, 4, None), 2),
    "streamseg_fuse_masks": ((None, None, 3, 0, 0, None), 2),
    "streamseg_resize_threshold": ((None, 0, 4, 4, 8, 8, 0.0, None), 1),
    "streamseg_overlay": ((None, None, 0, None, 3, 128, None), 2),
    "streamseg_rle_count": ((None, 0, 4, 4, None, None), 1),
    "streamseg_rle_transitions": ((None, 0, 4, 4, None, None, None), 1),
}


@pytest.mark.parametrize("name", sorted(EMPTY_CALLS))
def test_entry_point_accepts_empty_input_without_a_device(kernel_library, monkeypatch, name):
    monkeypatch.setenv(_library.ENV_LIBRARY, str(kernel_library))
    _library.reset()
    try:
        library = _library.load().library
        arguments, count_at = EMPTY_CALLS[name]
        assert getattr(library, name)(*arguments, 0, None) == 0
        # A negative count is refused up front with cudaErrorInvalidValue (1).
        bad = list(arguments)
        bad[count_at] = -1
        assert getattr(library, name)(*bad, 0, None) == 1
    finally:
        _library.reset()


def test_segment_count_is_a_host_function(kernel_library):
    library = ctypes.CDLL(str(kernel_library))
    library.streamseg_rle_segment_count.restype = ctypes.c_int64
    library.streamseg_rle_segment_count.argtypes = [ctypes.c_int64, ctypes.c_int64]
    # 64 rows per segment: 1080 rows -> 17 segments per column.
    assert library.streamseg_rle_segment_count(1080, 1920) == 1920 * 17
    assert library.streamseg_rle_segment_count(0, 5) == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a CUDA device")
def test_without_a_device_the_probe_fails_cleanly_and_ops_use_the_reference(kernel_library, monkeypatch):
    monkeypatch.setenv(_library.ENV_LIBRARY, str(kernel_library))
    _library.reset()
    try:
        library = _library.load().library
        code = library.streamseg_probe(0)
        assert code != 0
        assert _library.error_name(library, code).startswith("cuda")
        assert _library.backend() == f"torch reference: no CUDA device (kernels built: {kernel_library})"
        assert _library.kernels_for(torch.zeros(1)) is None
    finally:
        _library.reset()


def test_importing_engine_ops_loads_nothing():
    code = ("import sys, engine.ops; from engine.ops import _library; "
            "assert _library._loaded is None; assert 'engine.ops._library' in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@pytest.mark.parametrize(("env", "expected"), [
    pytest.param({"STREAMSEG_OPS": "reference"}, "torch reference: forced by STREAMSEG_OPS=reference",
                 id="forced"),
    pytest.param({"STREAMSEG_KERNELS_LIB": "/nonexistent/libstreamseg_kernels.so"},
                 "torch reference: library not found at $STREAMSEG_KERNELS_LIB=/nonexistent/"
                 "libstreamseg_kernels.so", id="explicit-path-missing"),
])
def test_backend_says_what_runs_and_why(monkeypatch, env, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _library.reset()
    try:
        assert _library.backend() == expected
    finally:
        _library.reset()


def test_backend_without_a_built_library(monkeypatch, tmp_path):
    monkeypatch.delenv(_library.ENV_LIBRARY, raising=False)
    monkeypatch.setattr("engine.__path__", [str(tmp_path)])
    _library.reset()
    try:
        assert _library.candidates() == [tmp_path / "_kernels" / _library.LIBRARY_NAME]
        assert _library.backend() == "torch reference: library not built"
    finally:
        _library.reset()


def test_a_library_that_is_not_one_is_reported(monkeypatch, tmp_path):
    bogus = tmp_path / _library.LIBRARY_NAME
    bogus.write_text("not an ELF file")
    monkeypatch.setenv(_library.ENV_LIBRARY, str(bogus))
    _library.reset()
    try:
        assert _library.backend().startswith("torch reference: library failed to load: ")
    finally:
        _library.reset()


def test_unknown_ops_mode_is_a_config_error(monkeypatch):
    monkeypatch.setenv(_library.ENV_OPS, "fastest")
    with pytest.raises(ConfigError, match="STREAMSEG_OPS='fastest'"):
        _library.mode()


def test_cpu_tensors_always_take_the_reference(monkeypatch):
    monkeypatch.delenv(_library.ENV_OPS, raising=False)
    assert _library.kernels_for(torch.zeros(3)) is None
