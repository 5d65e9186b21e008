// COCO run-length encoding, the device half: the column-major positions where each mask changes value.
//
// COCO RLE reads a mask down its columns (linear index j = x * H + y) and counts alternating runs,
// starting with background. With M[-1] = 0, the run boundaries are exactly the transitions
// T = { j : M[j] != M[j - 1] }, so counts = diff([0, T..., H * W]) (a leading 0 when M[0] = 1). The
// host turns the positions into counts and the COCO string (engine/ops/rle.py).
//
// The masks are row-major [N, H, W], so a column is strided in memory. Each thread owns one column
// segment of kSegmentRows rows: a warp holds 32 neighbouring columns of the same rows, so every row
// step is one coalesced 32-byte read. Segments are numbered column-major, (x, segment), which is the
// order their transitions take in T; an exclusive scan of per-segment transition counts gives each
// segment its write offset.
//
//   streamseg_rle_segment_count(H, W)  -> S = W * ceil(H / kSegmentRows), host-only
//   streamseg_rle_count(...)           -> [N, S] int32 exclusive offsets + [N] int32 transitions per mask
//   streamseg_rle_transitions(...)     -> int32 positions, mask i's at mask_offsets[i] onwards
#include <cub/block/block_scan.cuh>

#include "common.cuh"

namespace streamseg {
namespace {

// Rows per segment: enough work per thread to amortise the index arithmetic, while a 1080p mask still
// gives 1920 x 17 threads. Not tuned.
constexpr int64_t kSegmentRows = 64;
constexpr int kScanThreads = 256;
constexpr int kScanItems = 4;

__host__ __device__ inline int64_t segments_per_column(int64_t h) {
  return (h + kSegmentRows - 1) / kSegmentRows;
}

// Walk one column segment and call emit(j) for each transition, in order.
template <typename Emit>
__device__ __forceinline__ void walk_segment(const uint8_t* __restrict__ mask, int64_t h, int64_t w,
                                             int64_t x, int64_t segment, Emit emit) {
  const int64_t y_begin = segment * kSegmentRows;
  const int64_t y_end = y_begin + kSegmentRows < h ? y_begin + kSegmentRows : h;
  // The value just before this segment in column-major order: the row above, or the bottom of the
  // previous column, or 0 before the first pixel.
  uint8_t previous = 0;
  if (y_begin > 0) {
    previous = mask[(y_begin - 1) * w + x] != 0;
  } else if (x > 0) {
    previous = mask[(h - 1) * w + x - 1] != 0;
  }
  for (int64_t y = y_begin; y < y_end; ++y) {
    const uint8_t value = mask[y * w + x] != 0;
    if (value != previous) emit(x * h + y);
    previous = value;
  }
}

// The walk both passes share, so that they number segments alike: one thread per (mask, segment, x),
// x fastest so a warp reads 32 neighbouring columns. Calls fn(mask, slot, x, segment), where slot is the
// segment's index in the [N, S] counts / offsets.
template <typename Fn>
__device__ __forceinline__ void for_each_segment(int64_t n, int64_t h, int64_t w, Fn fn) {
  const int64_t per_column = segments_per_column(h);
  const int64_t per_mask = w * per_column;
  const int64_t total = n * per_mask;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t x = t % w;
    const int64_t segment = (t / w) % per_column;
    const int64_t mask = t / per_mask;
    fn(mask, mask * per_mask + x * per_column + segment, x, segment);
  }
}

__global__ void count_transitions_kernel(const uint8_t* __restrict__ masks, int64_t n, int64_t h,
                                         int64_t w, int32_t* __restrict__ segment_counts) {
  for_each_segment(n, h, w, [&](int64_t mask, int64_t slot, int64_t x, int64_t segment) {
    int32_t count = 0;
    walk_segment(masks + mask * h * w, h, w, x, segment, [&](int64_t) { ++count; });
    segment_counts[slot] = count;
  });
}

struct RunningPrefix {
  int32_t total;
  __device__ int32_t operator()(int32_t block_sum) {
    const int32_t old = total;
    total += block_sum;
    return old;
  }
};

// One block per mask scans its S segment counts in place into exclusive offsets, kScanThreads x
// kScanItems at a time, carrying the running total between tiles; S is ~33k at 1080p, so a block per
// mask is enough and needs no inter-block coordination.
__global__ void scan_segments_kernel(int32_t* __restrict__ segment_counts, int64_t per_mask,
                                     int32_t* __restrict__ totals) {
  using BlockScan = cub::BlockScan<int32_t, kScanThreads>;
  __shared__ typename BlockScan::TempStorage storage;
  int32_t* counts = segment_counts + static_cast<int64_t>(blockIdx.x) * per_mask;
  RunningPrefix prefix{0};
  constexpr int64_t kTileItems = static_cast<int64_t>(kScanThreads) * kScanItems;
  for (int64_t tile = 0; tile < per_mask; tile += kTileItems) {
    int32_t items[kScanItems];
#pragma unroll
    for (int k = 0; k < kScanItems; ++k) {
      const int64_t i = tile + threadIdx.x * kScanItems + k;
      items[k] = i < per_mask ? counts[i] : 0;
    }
    BlockScan(storage).ExclusiveSum(items, items, prefix);
    __syncthreads();  // storage is reused by the next tile
#pragma unroll
    for (int k = 0; k < kScanItems; ++k) {
      const int64_t i = tile + threadIdx.x * kScanItems + k;
      if (i < per_mask) counts[i] = items[k];
    }
  }
  if (threadIdx.x == 0) totals[blockIdx.x] = prefix.total;
}

__global__ void write_transitions_kernel(const uint8_t* __restrict__ masks, int64_t n, int64_t h,
                                         int64_t w, const int32_t* __restrict__ segment_offsets,
                                         const int64_t* __restrict__ mask_offsets,
                                         int32_t* __restrict__ positions) {
  for_each_segment(n, h, w, [&](int64_t mask, int64_t slot, int64_t x, int64_t segment) {
    int32_t* out = positions + mask_offsets[mask] + segment_offsets[slot];
    walk_segment(masks + mask * h * w, h, w, x, segment,
                 [&](int64_t j) { *out++ = static_cast<int32_t>(j); });
  });
}

}  // namespace
}  // namespace streamseg

using namespace streamseg;

STREAMSEG_API int64_t streamseg_rle_segment_count(int64_t height, int64_t width) {
  if (height <= 0 || width <= 0) return 0;
  return width * segments_per_column(height);
}

STREAMSEG_API int streamseg_rle_count(const uint8_t* masks, int64_t n, int64_t h, int64_t w,
                                      int32_t* segment_offsets, int32_t* totals, int device,
                                      void* stream) {
  if (n < 0 || h < 0 || w < 0 || n > 2147483647LL || h * w > 2147483647LL) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  STREAMSEG_TRY(select_device(device));
  cudaStream_t s = as_stream(stream);
  const int64_t per_mask = streamseg_rle_segment_count(h, w);
  if (per_mask == 0) return static_cast<int>(cudaMemsetAsync(totals, 0, n * sizeof(int32_t), s));
  count_transitions_kernel<<<blocks_for(n * per_mask), kBlockThreads, 0, s>>>(masks, n, h, w,
                                                                            segment_offsets);
  STREAMSEG_TRY(cudaGetLastError());
  scan_segments_kernel<<<static_cast<unsigned>(n), kScanThreads, 0, s>>>(segment_offsets, per_mask,
                                                                        totals);
  return launch_status();
}

STREAMSEG_API int streamseg_rle_transitions(const uint8_t* masks, int64_t n, int64_t h, int64_t w,
                                            const int32_t* segment_offsets, const int64_t* mask_offsets,
                                            int32_t* positions, int device, void* stream) {
  if (n < 0 || h < 0 || w < 0 || h * w > 2147483647LL) return cudaErrorInvalidValue;
  const int64_t per_mask = streamseg_rle_segment_count(h, w);
  if (n == 0 || per_mask == 0) return cudaSuccess;
  STREAMSEG_TRY(select_device(device));
  write_transitions_kernel<<<blocks_for(n * per_mask), kBlockThreads, 0, as_stream(stream)>>>(
      masks, n, h, w, segment_offsets, mask_offsets, positions);
  return launch_status();
}
