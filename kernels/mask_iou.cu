// Pairwise IoU of two sets of binary masks, on bit-packed masks.
//
//   streamseg_pack_masks:       [N, P] bool bytes -> [N, ceil(P / 32)] uint32 words + [N] int32 areas
//   streamseg_mask_iou_packed:  two packed sets -> [N, M] float32 IoU
//
// IoU(a, b) = |a & b| / (|a| + |b| - |a & b|), and 0 when both masks are empty (the union is 0). The
// division is one IEEE float32 division of the two counts, each converted to float32 with round to
// nearest, so engine/ops/mask_iou.py's reference matches bit for bit.
#include "common.cuh"

namespace streamseg {
namespace {

constexpr int kWordBits = 32;

// Pack: one warp builds one 32-bit word with __ballot_sync, each lane reading one mask byte, so a warp's
// loads are 32 consecutive bytes. blockIdx.y walks masks, blockIdx.x and the warp walk words; each block
// sums its words' popcounts and adds them to the mask's area with one atomic.
__global__ void pack_masks_kernel(const uint8_t* __restrict__ masks, int64_t n, int64_t pixels,
                                  int64_t words, uint32_t* __restrict__ packed,
                                  int32_t* __restrict__ areas) {
  __shared__ int warp_area[kBlockThreads / 32];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  for (int64_t mask = blockIdx.y; mask < n; mask += gridDim.y) {
    const uint8_t* src = masks + mask * pixels;
    int area = 0;
    // The loop bounds are the same for every lane of a warp, so the ballot sees all 32 lanes.
    for (int64_t word = static_cast<int64_t>(blockIdx.x) * warps + warp; word < words;
         word += static_cast<int64_t>(gridDim.x) * warps) {
      const int64_t pixel = word * kWordBits + lane;
      const bool bit = pixel < pixels && src[pixel] != 0;
      const uint32_t bits = __ballot_sync(0xffffffffu, bit);
      if (lane == 0) {
        packed[mask * words + word] = bits;
        area += __popc(bits);
      }
    }
    if (lane == 0) warp_area[warp] = area;
    __syncthreads();
    if (threadIdx.x == 0) {
      int total = 0;
      for (int w = 0; w < warps; ++w) total += warp_area[w];
      if (total != 0) atomicAdd(&areas[mask], total);
    }
    __syncthreads();  // warp_area is reused by the next mask
  }
}

// Intersections: a GEMM-shaped reduction with AND + popcount in place of multiply-add. A 16 x 16 block
// owns a 16 x 16 tile of (a, b) pairs, one pair per thread, and stages 32-word chunks of its 16 + 16
// masks in shared memory, so each word loaded from global memory is used 16 times. blockIdx.z splits the
// words (split-K) so that few masks still give enough blocks to fill the GPU; the partial counts meet in
// `counts` by atomicAdd. The +1 column of padding keeps the 16 rows of `tile_b` in distinct banks.
constexpr int kTile = 16;
constexpr int kChunkWords = 32;

__global__ void intersect_kernel(const uint32_t* __restrict__ a, int64_t n,
                                 const uint32_t* __restrict__ b, int64_t m, int64_t words,
                                 int64_t span, int32_t* __restrict__ counts) {
  __shared__ uint32_t tile_a[kTile][kChunkWords + 1];
  __shared__ uint32_t tile_b[kTile][kChunkWords + 1];
  const int tx = threadIdx.x;
  const int ty = threadIdx.y;
  const int tid = ty * kTile + tx;
  const int64_t row_a = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t row_b = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t begin = static_cast<int64_t>(blockIdx.z) * span;
  const int64_t end = begin + span < words ? begin + span : words;
  int count = 0;
  for (int64_t chunk = begin; chunk < end; chunk += kChunkWords) {
    // 256 threads load 16 x 32 words of each side, two per thread, consecutive threads on consecutive
    // words of the same mask.
    for (int i = tid; i < kTile * kChunkWords; i += kTile * kTile) {
      const int r = i / kChunkWords;
      const int c = i % kChunkWords;
      const int64_t word = chunk + c;
      const bool in_words = word < end;
      tile_a[r][c] = (in_words && row_a + r < n) ? a[(row_a + r) * words + word] : 0u;
      tile_b[r][c] = (in_words && row_b + r < m) ? b[(row_b + r) * words + word] : 0u;
    }
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kChunkWords; ++c) count += __popc(tile_a[ty][c] & tile_b[tx][c]);
    __syncthreads();
  }
  if (row_a + ty < n && row_b + tx < m && count != 0) {
    atomicAdd(&counts[(row_a + ty) * m + row_b + tx], count);
  }
}

// One thread per pair turns the intersection count, stored as int32 in the output buffer, into the IoU
// in place (the same thread reads the int and writes the float at one address).
__global__ void iou_from_counts_kernel(const int32_t* __restrict__ areas_a, int64_t n,
                                       const int32_t* __restrict__ areas_b, int64_t m, float* iou) {
  const int64_t pairs = n * m;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < pairs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t inter = reinterpret_cast<const int32_t*>(iou)[i];
    const int64_t uni = static_cast<int64_t>(areas_a[i / m]) + areas_b[i % m] - inter;
    iou[i] = uni > 0 ? __fdiv_rn(static_cast<float>(inter), static_cast<float>(uni)) : 0.0f;
  }
}

}  // namespace
}  // namespace streamseg

using namespace streamseg;

STREAMSEG_API int streamseg_pack_masks(const uint8_t* masks, int64_t n, int64_t pixels,
                                       uint32_t* packed, int32_t* areas, int device, void* stream) {
  if (n < 0 || pixels < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  STREAMSEG_TRY(select_device(device));
  cudaStream_t s = as_stream(stream);
  STREAMSEG_TRY(cudaMemsetAsync(areas, 0, n * sizeof(int32_t), s));
  const int64_t words = (pixels + kWordBits - 1) / kWordBits;
  if (words == 0) return cudaSuccess;
  const int warps = kBlockThreads / 32;
  // About eight words per warp at 1080p; masks beyond 65535 are walked by the grid-stride loop.
  int64_t bx = (words + warps - 1) / warps;
  if (bx > 1024) bx = 1024;
  const dim3 grid(static_cast<unsigned>(bx), static_cast<unsigned>(n < kMaxBlocks ? n : kMaxBlocks));
  pack_masks_kernel<<<grid, kBlockThreads, 0, s>>>(masks, n, pixels, words, packed, areas);
  return launch_status();
}

STREAMSEG_API int streamseg_mask_iou_packed(const uint32_t* packed_a, const int32_t* areas_a, int64_t n,
                                            const uint32_t* packed_b, const int32_t* areas_b, int64_t m,
                                            int64_t words, float* iou, int device, void* stream) {
  if (n < 0 || m < 0 || words < 0) return cudaErrorInvalidValue;
  if (n == 0 || m == 0) return cudaSuccess;
  const int64_t tiles_n = (n + kTile - 1) / kTile;
  const int64_t tiles_m = (m + kTile - 1) / kTile;
  if (tiles_n > kMaxBlocks || tiles_m > 2147483647LL) return cudaErrorInvalidValue;
  STREAMSEG_TRY(select_device(device));
  cudaStream_t s = as_stream(stream);
  // The output doubles as the int32 intersection counters (same size), zeroed first.
  STREAMSEG_TRY(cudaMemsetAsync(iou, 0, n * m * sizeof(float), s));
  if (words > 0) {
    int sms = 0;
    STREAMSEG_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    // Split the words until there are about four blocks per SM, but keep at least eight 32-word chunks
    // per split so the atomics stay few. A starting point, not a measured optimum.
    const int64_t chunks = (words + kChunkWords - 1) / kChunkWords;
    const int64_t tiles = tiles_n * tiles_m;
    int64_t splits = (4LL * sms + tiles - 1) / tiles;
    const int64_t max_splits = (chunks + 7) / 8;
    if (splits > max_splits) splits = max_splits;
    if (splits > kMaxBlocks) splits = kMaxBlocks;
    if (splits < 1) splits = 1;
    const int64_t span = ((chunks + splits - 1) / splits) * kChunkWords;
    splits = (words + span - 1) / span;
    const dim3 grid(static_cast<unsigned>(tiles_m), static_cast<unsigned>(tiles_n),
                    static_cast<unsigned>(splits));
    intersect_kernel<<<grid, dim3(kTile, kTile), 0, s>>>(packed_a, n, packed_b, m, words, span,
                                                         reinterpret_cast<int32_t*>(iou));
    STREAMSEG_TRY(cudaGetLastError());
  }
  iou_from_counts_kernel<<<blocks_for(n * m), kBlockThreads, 0, s>>>(areas_a, n, areas_b, m, iou);
  return launch_status();
}
