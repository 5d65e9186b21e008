"""The kernel library under test, and the switch that points engine.ops at it.

The library is the one built from this tree: $STREAMSEG_KERNELS_LIB when set, else a CMake build into
build/tests-kernels (incremental after the first run) wherever nvcc is present, else an installed one in
engine/_kernels. Without nvcc and without a library, the tests that need it skip and say why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from engine.ops import _library

ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = ROOT / "build" / "tests-kernels"


def find_nvcc() -> str | None:
    """nvcc where CMakeLists.txt would look for it."""
    if os.environ.get("CUDACXX"):
        return os.environ["CUDACXX"]
    for root in (os.environ.get("CUDAToolkit_ROOT"), os.environ.get("CUDA_HOME"),
                 os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return str(Path(root) / "bin" / "nvcc")
    return shutil.which("nvcc")


def _build() -> Path:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.fail("nvcc is present but cmake is not: install cmake (>= 3.24) to build the kernels")
    steps = [
        [cmake, "-S", str(ROOT), "-B", str(BUILD_DIR), "-DSTREAMSEG_KERNELS=ON",
         "-DCMAKE_BUILD_TYPE=Release"],
        [cmake, "--build", str(BUILD_DIR), "-j", str(os.cpu_count() or 2)],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"kernel build failed: {' '.join(step)}\n"
                        f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return BUILD_DIR / _library.LIBRARY_NAME


@pytest.fixture(scope="session")
def kernel_library() -> Path:
    """Path of the kernel library built from this tree (see the module docstring)."""
    explicit = os.environ.get(_library.ENV_LIBRARY)
    if explicit:
        if not Path(explicit).is_file():
            pytest.fail(f"${_library.ENV_LIBRARY}={explicit} does not exist")
        return Path(explicit)
    if find_nvcc() is not None:
        return _build()
    installed = next((p for p in _library.candidates() if p.is_file()), None)
    if installed is not None:
        return installed
    pytest.skip("kernel library not built and no nvcc to build it")


@pytest.fixture(scope="session")
def kernels(kernel_library: Path):
    """engine.ops dispatching to the kernel library for CUDA tensors, for the whole session."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(_library.ENV_LIBRARY, str(kernel_library))
        patch.delenv(_library.ENV_OPS, raising=False)
        _library.reset()
        state = _library.backend()
        if not state.startswith("cuda kernels"):
            pytest.fail(f"the kernel library at {kernel_library} is not usable here: {state}")
        yield kernel_library
    _library.reset()
