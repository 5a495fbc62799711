//===- NVPTXTarget.h - attn kernels for NVIDIA GPUs -----------------------===//
#ifndef ATTN_TARGET_NVPTX_NVPTXTARGET_H
#define ATTN_TARGET_NVPTX_NVPTXTARGET_H

#include "dialect/AttnOps.h"
#include "lib/Target/GPU/GpuBackward.h"
#include "lib/Target/GPU/GpuKernel.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

#include <string>

namespace mlir::attn::nvptx {

struct KernelConfig {
  std::string chip = "sm_80"; // sm_80 or sm_90a
  int64_t blockKV = 64;       // keys per tile
  /// Query rows per CTA, 16 per consumer warp: 64 (4 warps), or on sm_90a
  /// 128 (two consumer warpgroups of 64 rows sharing the K/V tiles).
  int64_t blockQ = 64;
  /// sm_90a TMA with 128 query rows: setmaxnreg moves registers from the
  /// producer's warpgroup to the consumers' (see KernelInfo).
  bool shareRegisters = true;
  /// sm_90a: TMA loads by a producer warp (mbarrier pipeline) instead of
  /// cp.async by all threads.
  bool tma = true;
  /// sm_90a TMA kernels of variants whose key tiles do not depend on the
  /// query rows (no mask, no select): CTAs per cluster, which take
  /// adjacent query tiles and share every K/V tile, each loading its share
  /// of the boxes by TMA multicast into all of them (L2 reads divided by
  /// the cluster size). 1 for none; at most 8 (the portable limit).
  int64_t clusterCtas = 2;
  /// Backward kernels of scalar FMAs instead of tensor cores (the first
  /// version, kept for head dims past 128 and as a cross-check).
  bool scalarBackward = false;
};

/// On a kernel taking TMA tensor maps: how many of its last parameters are
/// maps. lowerToPtx makes them 128-byte grid-constant parameters (CUDA's
/// `const __grid_constant__ CUtensorMap`), passed by value at launch: no
/// device allocation or copy per launch, and launches stay capturable in
/// CUDA graphs.
inline constexpr const char kTensorMapArgsAttr[] = "attn.tensor_map_args";

/// Launch geometry (see GpuKernel.h); tensorMaps only on sm_90a.
using KernelInfo = gpukernel::KernelInfo;

/// Adds `gpu.module @attn_gpu { gpu.func @name(q, k, v, o, [lse], params...,
/// captures..., o_part, lse_part, parts, [q/k/v tensor maps]) kernel;
/// gpu.func @name_merge(o_part, lse_part, o, [lse]) kernel }` computing `op`
/// (tensor maps by value, see kTensorMapArgsAttr)
/// (classified by attn-classify-mask) to `host`. With parts > 1, the grid's
/// x is query tiles x parts, each part covers an equal share of the key
/// tiles and writes o_part/lse_part, and the merge kernel (grid
/// (ceil(Sq Dv / blockThreads of 128), Hq, B)) combines them into o and lse.
/// Fails with `error` for what GPU kernels do not support.
FailureOr<KernelInfo> buildGpuKernel(ModuleOp host, AttentionOp op,
                                     StringRef name, const KernelConfig &cfg,
                                     std::string &error);

using gpukernel::BackwardKernel;
using gpukernel::BackwardKernels;

/// Adds the backward of `op` (AttentionOp::isBackward, classified) to the
/// gpu.module buildGpuKernel made in `host`: `<name>_bwd_kv(q, k, v, o,
/// [lse], params..., captures..., do, dq, dk, dv)` over grid (ceil(Skv /
/// rows), Hkv, B) writing dk and dv, and `<name>_bwd_q(same)` over grid
/// (ceil(Sq / rows), Hq, B) writing dq; both then take one flat f32 buffer
/// per f32 param and f32 captured tensor (params first), whose slab
/// [slot x elements, (slot + 1) x elements) thread `slot` (linear CTA x
/// threads + thread) adds its share of the gradient to.
FailureOr<BackwardKernels> buildGpuBackwardKernels(ModuleOp host,
                                                   AttentionOp op,
                                                   StringRef name,
                                                   const KernelConfig &cfg,
                                                   std::string &error);

/// Lowers the gpu.module in `host` to PTX text for `chip` (MLIR's NVVM
/// pipeline and LLVM's NVPTX backend).
FailureOr<std::string> lowerToPtx(ModuleOp host, const KernelConfig &cfg,
                                  std::string &error);

/// ptxas -arch=<chip> -v: the cubin, and ptxas's report (registers,
/// spills). Fails when ptxas is missing ($ATTNC_PTXAS, $CUDA_HOME/bin,
/// /usr/local/cuda/bin) or rejects the PTX.
struct PtxasResult {
  std::string cubin;
  std::string report;
  int64_t spillStoreBytes = 0, spillLoadBytes = 0, registers = 0;
};
FailureOr<PtxasResult> runPtxas(const std::string &ptx, const std::string &chip,
                                std::string &error);

/// Whether runPtxas can find ptxas.
bool havePtxas();

/// Whether kernels for `chip` use warpgroup MMA (wgmma, sm_90a).
bool usesWgmma(StringRef chip);

/// A vector<2xf16|bf16> as the i32 register an mma operand takes.
Value bitcastPair(OpBuilder &b, Value pair);

/// One mma.sync.m16n8k`k` (A row-major, B column-major) of `type`
/// operands: the four `accType` accumulators of c + a . bf (i32 wraps).
/// The forward's and the backward's tensor-core steps both issue it.
std::array<Value, 4> mmaSync(OpBuilder &b, Location loc, ArrayRef<Value> a,
                             ArrayRef<Value> bf, ArrayRef<Value> c, int64_t k,
                             NVVM::MMATypes type, Type accType);

} // namespace mlir::attn::nvptx

#endif // ATTN_TARGET_NVPTX_NVPTXTARGET_H
