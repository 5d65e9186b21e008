// What the loader asks of the library before it trusts it: the ABI version it was built with, a readable
// name for an error code, and whether the kernels can run on a given device at all.
#include "common.cuh"

namespace streamseg {
namespace {

// Version of the C ABI below and in the other kernels/*.cu files; engine/ops/_library.py refuses a
// library whose version differs from the one it was written for.
constexpr int kAbiVersion = 1;

__global__ void probe_kernel(int* out) {
  if (out != nullptr) *out = 1;
}

}  // namespace
}  // namespace streamseg

using namespace streamseg;

STREAMSEG_API int streamseg_abi_version(void) { return kAbiVersion; }

STREAMSEG_API const char* streamseg_error_name(int code) {
  return cudaGetErrorName(static_cast<cudaError_t>(code));
}

STREAMSEG_API const char* streamseg_error_string(int code) {
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}

// 0 when this library's kernels can run on `device`: a driver new enough for its CUDA runtime, and a
// kernel image (sm_90a code, or the PTX that the driver compiles) the device accepts. Launches nothing.
STREAMSEG_API int streamseg_probe(int device) {
  STREAMSEG_TRY(select_device(device));
  cudaFuncAttributes attributes;
  return static_cast<int>(cudaFuncGetAttributes(&attributes, probe_kernel));
}
