// Overlap resolution: per-instance mask evidence at frame resolution -> one instance-id map.
//
// For pixel p, the candidates are the instances i with x[i, p] > 0 (logits) or x[i, p] > 0.5
// (probabilities). With none, id[p] = -1. Otherwise id[p] is the lowest i among the candidates that
// maximise the evidence e[i, p] = score[i] * sigmoid(x[i, p]) (logits) or score[i] * x[i, p]
// (probabilities). engine/ops/fuse_masks.py states the same rule and its reference follows it.
//
// sigmoid is 1 / (1 + expf(-x)) with IEEE division and addition, the formula torch's own CUDA sigmoid
// uses; the probability rule is a single IEEE multiply, so it matches the reference bit for bit.
#include "common.cuh"

namespace streamseg {
namespace {

__device__ __forceinline__ float sigmoid(float x) {
  return __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-x)));
}

// One thread per pixel walks the N instances in index order, so the strict `>` keeps the lowest index
// on ties. For each instance the warp reads 32 consecutive floats: the loads are coalesced and the
// kernel is bound by reading N x H x W floats once. Scores are re-read per pixel from L1/L2.
__global__ void fuse_masks_kernel(const float* __restrict__ masks, const float* __restrict__ scores,
                                  int64_t n, int64_t pixels, bool probabilities,
                                  int32_t* __restrict__ id_map) {
  const float foreground = probabilities ? 0.5f : 0.0f;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < pixels;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int32_t best = -1;
    float best_evidence = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      const float x = masks[i * pixels + p];
      if (!(x > foreground)) continue;  // also skips NaN
      const float evidence = __fmul_rn(scores[i], probabilities ? x : sigmoid(x));
      if (best < 0 || evidence > best_evidence) {
        best = static_cast<int32_t>(i);
        best_evidence = evidence;
      }
    }
    id_map[p] = best;
  }
}

}  // namespace
}  // namespace streamseg

using namespace streamseg;

STREAMSEG_API int streamseg_fuse_masks(const float* masks, const float* scores, int64_t n,
                                       int64_t pixels, int probabilities, int32_t* id_map, int device,
                                       void* stream) {
  if (n < 0 || pixels < 0 || n > 2147483647LL) return cudaErrorInvalidValue;
  if (pixels == 0) return cudaSuccess;
  STREAMSEG_TRY(select_device(device));
  fuse_masks_kernel<<<blocks_for(pixels), kBlockThreads, 0, as_stream(stream)>>>(
      masks, scores, n, pixels, probabilities != 0, id_map);
  return launch_status();
}
