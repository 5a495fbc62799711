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

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

#include <functional>
#include <optional>
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
  /// Both kernels take the gradient buffers of appendGradientBuffers after
  /// dv (detail::GpuCode::backwardGradients).
  bool gradientBuffers = false;
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
  /// The kernels take the gradient buffers of appendGradientBuffers after
  /// dv and compute the gradients of f32 params and captured tensors.
  bool gradients = false;
};

/// The backward kernels' operands: q, k, v, o, [lse], params...,
/// captures..., do, dq, dk, dv, and with select the kept map
/// [B, Hq, ceil(Sq / N), ceil(Skv / N)] (i8) of the forward's pre-pass
/// (buildSelectKernels), whose choices the backward holds constant.
KernelSignature backwardSignature(AttentionOp op);

/// What every backward builder does first: checks that `op` is a backward
/// op the target's `units` support, differentiates it, and finds the
/// gpu.module the forward kernel was built in (where the backward kernels
/// go). Fails with `error` set.
FailureOr<gpu::GPUModuleOp> prepareBackwardBuild(ModuleOp host, AttentionOp op,
                                                 StringRef units,
                                                 std::string &error);

/// The backward's per-CTA set-up and per-entry math, for the targets'
/// backward builders (the SIMT one in GpuBackward.cpp; matrix-unit ones
/// call entry() on their fragments' elements).
class BackwardBase : public KernelBase {
protected:
  BackwardBase(AttentionOp op, IRMapping outside, int64_t rows,
               int64_t threads)
      : KernelBase(op, std::move(outside), rows, rows), rows(rows),
        threads(threads) {}

  /// Reads the operands (backwardSignature), the sizes the regions see, the
  /// scale, the batch (block z) and the thread (x).
  void setUpBackward(OpBuilder &b);
  /// The classifier's verdict on query rows [qLo, qHi] of head h32 against
  /// keys [kLo, kHi] (index values, inclusive bounds), with select combined
  /// with the kept map (EMPTY where no block under the tile is kept).
  Value classify(OpBuilder &b, Value h32, Value qLo, Value qHi, Value kLo,
                 Value kHi);
  /// Whether `cls` is not EMPTY.
  Value notEmpty(OpBuilder &b, Value cls);
  /// Whether some tiles are PARTIAL: entries there are checked against the
  /// mask and select's kept blocks.
  bool hasPartialTiles() { return op.hasMask() || keptMap; }
  /// Runs body(withMask) under FULL (no mask) or not (mask and, with
  /// select, the kept map).
  void byClass(OpBuilder &b, Value cls,
               function_ref<void(OpBuilder &, bool)> body);
  /// (p, dS) of one entry: s = q . k, dp = dO . v, the row's lse and
  /// delta = rowsum(dO * O); 0 where the entry is not `valid`, masked
  /// (withMask) or its row has no mass.
  std::pair<Value, Value> entry(OpBuilder &b, Value s, Value dp, Value rowLse,
                                Value delta, Value h32, Value q32, Value kv32,
                                Value valid, bool withMask);

  Value toF32(OpBuilder &b, Value x) {
    return x.getType().isF32()
               ? x
               : arith::ExtFOp::create(b, loc, b.getF32Type(), x).getResult();
  }
  Value minU(OpBuilder &b, Value x, Value y) {
    return arith::MinUIOp::create(b, loc, x, y);
  }
  Value ult(OpBuilder &b, Value x, Value y) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, x, y);
  }
  /// The last valid index below `n` (0 for n = 0): reads of rows past the
  /// end go there and are then ignored.
  Value lastBelow(OpBuilder &b, Value n) {
    return arith::SubIOp::create(
        b, loc, arith::MaxUIOp::create(b, loc, n, cIdx(b, 1)), cIdx(b, 1));
  }

  /// A workgroup (shared memory) buffer of `func`, f32 unless `type`.
  Value sharedBuffer(gpu::GPUFuncOp func, ArrayRef<int64_t> shape,
                     Type type = {});
  void forLoop(OpBuilder &b, Value lb, Value ub, Value step,
               function_ref<void(OpBuilder &, Value)> body) {
    scf::ForOp::create(b, loc, lb, ub, step, ValueRange{},
                       [&](OpBuilder &nb, Location, Value iv, ValueRange) {
                         body(nb, iv);
                         scf::YieldOp::create(nb, loc);
                       });
  }
  void forLoop(OpBuilder &b, Value lb, Value ub,
               function_ref<void(OpBuilder &, Value)> body) {
    forLoop(b, lb, ub, cIdx(b, 1), body);
  }
  /// sum_d a[ai..., d] * c[ci..., d] over d < n, in f32.
  Value dot(OpBuilder &b, Value a, ValueRange ai, Value c, ValueRange ci,
            int64_t n);
  /// dst[row, d] += x * src[si..., d] for d < n.
  void axpy(OpBuilder &b, Value dst, Value row, Value x, Value src,
            ValueRange si, int64_t n);

  /// Gradients of f32 params and captured tensors, for kernels that take
  /// their buffers (appendGradientBuffers; arguments from firstGradArg on):
  /// this thread's slab of each buffer (slot = linear CTA x threads +
  /// thread) becomes the op's param/capture gradient
  /// (RegionInliner::gradientOf). bwd_kv (keyPhase) adds score_grad's and
  /// scale_grad's accumulations in entry(); bwd_q adds only sink-logit
  /// gradients (emitSinkGradient).
  void setUpGradients(OpBuilder &b, gpu::GPUFuncOp func, size_t firstGradArg,
                      bool keyPhase);
  /// A query row's sink-logit gradient -exp(sink - lse) delta into the
  /// thread's slabs (no-op without a sink or gradient buffers).
  void emitSinkGradient(OpBuilder &b, Value h32, Value rowLse, Value delta,
                        Value valid);

  /// Rows a CTA owns, and its threads.
  int64_t rows, threads;
  bool phase0 = false;
  Value slot;
  llvm::DenseMap<Value, Value> slotViews;
  Value dO, dq, dk, dv;
  Value headsQ, headsKV, group, tid;
};

/// Rows per CTA of the SIMT kernels: 64, 32 or 16, the most whose f32
/// accumulators ([rows, width]) fit in `budget` bytes.
int64_t backwardRows(int64_t width, int64_t budget);

/// The SIMT kernel of `phase` (0: bwd_kv, 1: bwd_q) into `func` (made by
/// createKernelFunc with backwardSignature(op) and `threads` threads, at
/// least `rows`), at b's insertion point (the body's start); the caller
/// adds the return. With `firstGradArg`, the kernel also takes the
/// gradient buffers of appendGradientBuffers from that argument on.
void emitSimtBackward(OpBuilder &b, gpu::GPUFuncOp func, AttentionOp op,
                      const IRMapping &outside, int phase, int64_t rows,
                      int64_t threads,
                      std::optional<size_t> firstGradArg = std::nullopt);

/// Appends one flat f32 buffer type (memref<?xf32>) per f32 param and f32
/// captured tensor of `op` (params first, declaration order), each holding
/// a slab of the gradient's elements per thread of either backward launch,
/// summed by the runtime in slot order; returns the first one's index.
size_t appendGradientBuffers(AttentionOp op, SmallVector<Type> &types);

/// Adds the backward of `op` (AttentionOp::isBackward, classified) to the
/// gpu.module @attn_gpu the target's forward made in `host`:
/// `<name>_bwd_kv(q, k, v, o, [lse], params..., captures..., do, dq, dk,
/// dv[, gradient buffers...])` over grid (ceil(Skv / rows), Hkv, B)
/// writing dk and dv, and `<name>_bwd_q(same)` over grid (ceil(Sq / rows),
/// Hq, B) writing dq; with cfg.gradients, both also add the gradients of
/// f32 params and captured tensors to their threads' slabs
/// (appendGradientBuffers; docs/backward.md).
FailureOr<BackwardKernels> buildBackwardKernels(ModuleOp host, AttentionOp op,
                                                StringRef name,
                                                const BackwardConfig &cfg,
                                                std::string &error);

} // namespace mlir::attn::gpukernel

#endif // ATTN_TARGET_GPU_GPUBACKWARD_H
