// Alpha-blended overlay of coloured masks: [H, W, 3] uint8 frame + [H, W] int32 id map + [K, 3] uint8
// colours -> [H, W, 3] uint8. The fixed-point rule of engine/ops/overlay.py, bit for bit:
// out = (pixel * (256 - a) + colour * a + 128) >> 8 where 0 <= id < K, the pixel unchanged elsewhere;
// `a` = round(alpha * 256) is computed once by the caller.
#include "common.cuh"

namespace streamseg {
namespace {

// One thread per pixel: the id read is coalesced, the three channel bytes are a stride-3 access that
// the cache lines of a warp cover completely. The colour table is small and stays in L1.
__global__ void overlay_kernel(const uint8_t* __restrict__ image, const int32_t* __restrict__ id_map,
                               int64_t pixels, const uint8_t* __restrict__ colors, int64_t num_colors,
                               int alpha, uint8_t* __restrict__ out) {
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < pixels;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t id = id_map[p];
    const uint8_t* px = image + 3 * p;
    uint8_t* dst = out + 3 * p;
    if (id >= 0 && id < num_colors) {
      const uint8_t* colour = colors + 3 * static_cast<int64_t>(id);
#pragma unroll
      for (int c = 0; c < 3; ++c) {
        dst[c] = static_cast<uint8_t>((px[c] * (256 - alpha) + colour[c] * alpha + 128) >> 8);
      }
    } else {
#pragma unroll
      for (int c = 0; c < 3; ++c) dst[c] = px[c];
    }
  }
}

}  // namespace
}  // namespace streamseg

using namespace streamseg;

STREAMSEG_API int streamseg_overlay(const uint8_t* image, const int32_t* id_map, int64_t pixels,
                                    const uint8_t* colors, int64_t num_colors, int alpha256,
                                    uint8_t* out, int device, void* stream) {
  if (pixels < 0 || num_colors < 0 || alpha256 < 0 || alpha256 > 256) return cudaErrorInvalidValue;
  if (pixels == 0) return cudaSuccess;
  STREAMSEG_TRY(select_device(device));
  overlay_kernel<<<blocks_for(pixels), kBlockThreads, 0, as_stream(stream)>>>(
      image, id_map, pixels, colors, num_colors, alpha256, out);
  return launch_status();
}
