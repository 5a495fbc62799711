//===- GpuBackward.h - attn.attention's backward as SIMT GPU kernels ------===//
//
// The backward kernels every GPU target builds the same way (one thread per
// key or query row, scalar f32; see GpuBackward.cpp): a target passes what
// differs (its warp / wave size, its function attributes).
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TARGET_GPU_GPUBACKWARD_H
#define ATTN_TARGET_GPU_GPUBACKWARD_H

#include "lib/Target/GPU/GpuKernel.h"

#include <functional>
#include <string>

namespace mlir::attn::gpukernel {

/// One backward kernel: `threads` threads a CTA, each of the first `rows`
/// owning one key row (bwd_kv) or query row (bwd_q).
struct BackwardKernel {
  std::string name;
  int64_t threads = 0, rows = 0;
};
struct BackwardKernels {
  BackwardKernel keys, queries;
};

/// What the targets' backward kernels differ in.
struct BackwardConfig {
  /// checkSupported's name for the matrix units ("tensor cores").
  std::string units = "tensor cores";
  /// A CTA has max(rows, minThreads) threads: NVIDIA rounds up to a warp
  /// (32); 1 keeps one thread per row (the accumulators are [threads, ..]).
  int64_t minThreads = 32;
  /// Static shared memory for the f32 row accumulators ([rows, D] and
  /// [rows, Dv]); rows halve (64, 32, 16) until they fit.
  int64_t accumulatorBytes = 40 * 1024;
  /// Adds the target's attributes to each kernel (launch bounds) given its
  /// thread count; may be empty.
  std::function<void(gpu::GPUFuncOp, int32_t threads)> decorate;
};

/// Adds the backward of `op` (AttentionOp::isBackward, classified) to the
/// gpu.module @attn_gpu the target's forward made in `host`:
/// `<name>_bwd_kv(q, k, v, o, [lse], params..., captures..., do, dq, dk,
/// dv)` over grid (ceil(Skv / rows), Hkv, B) writing dk and dv, and
/// `<name>_bwd_q(same)` over grid (ceil(Sq / rows), Hq, B) writing dq; the
/// gradients of params and captured tensors are not computed
/// (docs/backward.md).
FailureOr<BackwardKernels> buildBackwardKernels(ModuleOp host, AttentionOp op,
                                                StringRef name,
                                                const BackwardConfig &cfg,
                                                std::string &error);

} // namespace mlir::attn::gpukernel

#endif // ATTN_TARGET_GPU_GPUBACKWARD_H
