// Bilinear resize of low-resolution logits to frame size, then a threshold, in one pass:
// [N, h, w] float32 -> [N, H, W] bool (one byte per pixel, 0 or 1).
//
// The interpolation is torch.nn.functional.interpolate(mode="bilinear", align_corners=False) written
// out: scale = in / out in float32, source = scale * (dst + 0.5) - 0.5 clamped at 0, the left/top
// neighbour at floor(source), the other one clamped to the last row/column, and the same expression
// order as torch's CUDA kernel. Equal sizes are a plain threshold (torch copies the input then).
// Results can still differ from torch by float rounding (the compiler may fuse a multiply and an add
// differently), which only matters for values within a few ulp of the threshold; the tests count such
// pixels and allow only those.
#include "common.cuh"

namespace streamseg {
namespace {

__device__ __forceinline__ float source_index(float scale, int64_t dst) {
  const float src = scale * (static_cast<float>(dst) + 0.5f) - 0.5f;
  return src < 0.0f ? 0.0f : src;
}

// One thread per output pixel of every mask (flattened, grid-stride). Neighbouring threads read
// neighbouring source pixels, which the cache serves; the output is written once, coalesced.
__global__ void resize_threshold_kernel(const float* __restrict__ logits, int64_t n, int64_t in_h,
                                        int64_t in_w, int64_t out_h, int64_t out_w, float scale_h,
                                        float scale_w, float threshold, uint8_t* __restrict__ out) {
  const int64_t total = n * out_h * out_w;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t x2 = index % out_w;
    const int64_t y2 = (index / out_w) % out_h;
    const int64_t mask = index / (out_w * out_h);
    const float* src = logits + mask * in_h * in_w;

    const float y1r = source_index(scale_h, y2);
    const int64_t y1 = static_cast<int64_t>(y1r);
    const int64_t y1p = y1 < in_h - 1 ? 1 : 0;
    const float y1lambda = y1r - static_cast<float>(y1);
    const float y0lambda = 1.0f - y1lambda;

    const float x1r = source_index(scale_w, x2);
    const int64_t x1 = static_cast<int64_t>(x1r);
    const int64_t x1p = x1 < in_w - 1 ? 1 : 0;
    const float x1lambda = x1r - static_cast<float>(x1);
    const float x0lambda = 1.0f - x1lambda;

    const float* row0 = src + y1 * in_w;
    const float* row1 = src + (y1 + y1p) * in_w;
    const float value = y0lambda * (x0lambda * row0[x1] + x1lambda * row0[x1 + x1p]) +
                        y1lambda * (x0lambda * row1[x1] + x1lambda * row1[x1 + x1p]);
    out[index] = value > threshold ? 1 : 0;
  }
}

__global__ void threshold_kernel(const float* __restrict__ logits, int64_t total, float threshold,
                                 uint8_t* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = logits[i] > threshold ? 1 : 0;
  }
}

}  // namespace
}  // namespace streamseg

using namespace streamseg;

STREAMSEG_API int streamseg_resize_threshold(const float* logits, int64_t n, int64_t in_h, int64_t in_w,
                                             int64_t out_h, int64_t out_w, float threshold,
                                             uint8_t* out, int device, void* stream) {
  if (n < 0 || in_h <= 0 || in_w <= 0 || out_h < 0 || out_w < 0) return cudaErrorInvalidValue;
  const int64_t total = n * out_h * out_w;
  if (total == 0) return cudaSuccess;
  STREAMSEG_TRY(select_device(device));
  cudaStream_t s = as_stream(stream);
  if (in_h == out_h && in_w == out_w) {
    threshold_kernel<<<blocks_for(total), kBlockThreads, 0, s>>>(logits, total, threshold, out);
  } else {
    // As torch computes it on the host: float(input size) / output size, in float32.
    const float scale_h = static_cast<float>(in_h) / static_cast<float>(out_h);
    const float scale_w = static_cast<float>(in_w) / static_cast<float>(out_w);
    resize_threshold_kernel<<<blocks_for(total), kBlockThreads, 0, s>>>(
        logits, n, in_h, in_w, out_h, out_w, scale_h, scale_w, threshold, out);
  }
  return launch_status();
}
