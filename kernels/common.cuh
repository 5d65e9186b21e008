// Shared by every kernel file: the export macro, stream/device handling and launch-error reporting.
//
// Every entry point is a plain C function that takes device pointers, sizes, the CUDA device index and a
// cudaStream_t passed as void*, and returns a cudaError_t as int (0 = success). The library links the
// CUDA runtime statically, so it has its own runtime state beside torch's: the device is set explicitly
// on every call rather than inherited, and streams are the driver-level handles torch hands out.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

#define STREAMSEG_API extern "C" __attribute__((visibility("default")))

namespace streamseg {

// Threads per block for the element-wise kernels (one thread per pixel). 256 is the common default that
// keeps enough warps per SM on every architecture from sm_75 up; not tuned.
constexpr int kBlockThreads = 256;

// Grid-stride loops cap the grid; a grid this large already fills any current GPU many times over.
constexpr int64_t kMaxBlocks = 65535;

inline cudaError_t select_device(int device) {
  int current = -1;
  cudaError_t err = cudaGetDevice(&current);
  if (err != cudaSuccess) return err;
  return current == device ? cudaSuccess : cudaSetDevice(device);
}

inline cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

inline unsigned int blocks_for(int64_t items, int threads = kBlockThreads) {
  int64_t blocks = (items + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned int>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

// The error of the last launch on this thread (bad configuration, missing kernel image), as an int.
inline int launch_status() { return static_cast<int>(cudaGetLastError()); }

}  // namespace streamseg

#define STREAMSEG_TRY(expr)                         \
  do {                                              \
    cudaError_t streamseg_err_ = (expr);            \
    if (streamseg_err_ != cudaSuccess) return static_cast<int>(streamseg_err_); \
  } while (0)
