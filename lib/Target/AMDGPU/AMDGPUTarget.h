//===- AMDGPUTarget.h - attn kernels for AMD CDNA GPUs --------------------===//
#ifndef ATTN_TARGET_AMDGPU_AMDGPUTARGET_H
#define ATTN_TARGET_AMDGPU_AMDGPUTARGET_H

#include "lib/Target/GPU/GpuBackward.h"
#include "lib/Target/GPU/GpuKernel.h"

#include <string>

namespace mlir::attn::rocm {

struct KernelConfig {
  std::string chip = "gfx942"; // gfx90a, gfx942 or gfx950
  int64_t blockKV = 32;        // keys per tile
  /// ld.lld, which links the code object (see cpu::findLld).
  std::string lld;
};

/// Whether kernels for `chip` are built (CDNA: wave64 with MFMA).
bool isSupportedChip(StringRef chip);

/// Bytes of LDS a kernel with these head dims and key tiles uses; with
/// `keyCodes`, K's tile holds int8 codes (Q.K on the integer matrix cores).
int64_t ldsBytes(int64_t headDim, int64_t valueHeadDim, int64_t blockKV,
                 bool keyCodes = false);

/// Adds `gpu.module @attn_gpu { gpu.func @name(...) kernel; gpu.func
/// @name_merge(...) kernel }` computing `op` (classified by
/// attn-classify-mask) to `host`, with the operands, grid and split-KV
/// contract of the NVIDIA kernels (see GpuKernel.h). Fails with `error`
/// for what these kernels do not support.
FailureOr<gpukernel::KernelInfo> buildGpuKernel(ModuleOp host, AttentionOp op,
                                                StringRef name,
                                                const KernelConfig &cfg,
                                                std::string &error);

/// Adds the backward of `op` (AttentionOp::isBackward, classified) to the
/// gpu.module buildGpuKernel made in `host`: the shared SIMT kernels of
/// gpukernel::buildBackwardKernels, `<name>_bwd_kv` and `<name>_bwd_q`,
/// one work-item per key or query row.
FailureOr<gpukernel::BackwardKernels>
buildGpuBackwardKernels(ModuleOp host, AttentionOp op, StringRef name,
                        const KernelConfig &cfg, std::string &error);

/// A linked AMDGPU code object (an ELF shared object, what
/// hipModuleLoadData takes) and the resources its metadata note reports,
/// summed (spills, scratch) or maximized (registers) over its kernels.
struct CodeObject {
  std::string object;
  int64_t vgprs = 0, agprs = 0, sgprs = 0;
  int64_t vgprSpills = 0, sgprSpills = 0, scratchBytes = 0, ldsBytes = 0;
  /// One line per kernel: name and the counts above.
  std::string report;
};

/// Lowers the gpu.module in `host` to a code object for cfg.chip (MLIR's
/// ROCDL conversion and LLVM's AMDGPU backend; no ROCm device libraries).
FailureOr<CodeObject> lowerToCodeObject(ModuleOp host, const KernelConfig &cfg,
                                        std::string &error);

/// The same lowering to AMDGPU assembly text.
FailureOr<std::string> lowerToAssembly(ModuleOp host, const KernelConfig &cfg,
                                       std::string &error);

/// Reads the metadata note of a code object.
FailureOr<CodeObject> inspectCodeObject(std::string object, std::string &error);

} // namespace mlir::attn::rocm

#endif // ATTN_TARGET_AMDGPU_AMDGPUTARGET_H
