//===- Cuda.h - kernels on NVIDIA GPUs through the CUDA driver API --------===//
//
// libcuda.so.1 is opened with dlopen at the first GPU launch, so attnrt
// loads and validates everywhere and a machine without a GPU gets an
// attn::Error saying so.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_RUNTIME_CUDA_H
#define ATTN_RUNTIME_CUDA_H

#include "attn/runtime.h"

#include <array>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace attn::detail {

/// Loaded into the current CUDA context on first use.
class CudaFunction {
public:
  explicit CudaFunction(GpuCode code) : code(std::move(code)) {}
  const GpuCode &gpuCode() const { return code; }
  /// Launches a grid of (ceil(Sq / rowsPerBlock), Hq, B) blocks with
  /// `params` (pointers to each argument) on `stream` (a CUstream, or null
  /// for the default stream); kernels with tensor maps get those of `qkv`
  /// appended. Throws attn::Error with the driver's message.
  void launch(int64_t batch, int64_t heads, int64_t seqQ,
              std::vector<void *> params,
              std::array<const TensorRef *, 3> qkv, void *stream) const;
  /// Split-KV: `parts` CTAs per query tile writing partial results, then
  /// the merge kernel over `mergeParams` (grid (ceil(Sq Dv / 128), Hq, B)).
  /// With `pack` > 1, each CTA holds `pack` query heads of one K/V head
  /// (rowsPerBlock / pack queries each): the grid's y is heads / pack.
  void launchSplit(int64_t batch, int64_t heads, int64_t seqQ,
                   int64_t valueHeadDim, int64_t parts, int64_t pack,
                   std::vector<void *> params, std::vector<void *> mergeParams,
                   std::array<const TensorRef *, 3> qkv, void *stream) const;
  /// The device's multiprocessor count (loads the kernel first).
  int64_t multiprocessors() const;
  /// Stream-ordered device memory for the partial results.
  void *allocate(size_t bytes, void *stream) const;
  void release(void *memory, void *stream) const;

private:
  GpuCode code;
  mutable std::once_flag loadOnce;
  void ensureLoaded() const;
  mutable void *function = nullptr; // CUfunction
  mutable void *merge = nullptr;    // CUfunction
  mutable int64_t smCount = 0;
  mutable std::string loadError;
};

} // namespace attn::detail

#endif // ATTN_RUNTIME_CUDA_H
