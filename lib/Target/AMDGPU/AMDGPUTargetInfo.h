//===- AMDGPUTargetInfo.h - TargetInfo for AMD CDNA GPUs ------------------===//
#ifndef ATTN_TARGET_AMDGPU_AMDGPUTARGETINFO_H
#define ATTN_TARGET_AMDGPU_AMDGPUTARGETINFO_H

#include "lib/Target/AMDGPU/AMDGPUTarget.h"
#include "lib/Target/GPU/GpuTargetInfo.h"

namespace mlir::attn::rocm {

/// The CDNA chips gfx90a, gfx942 and gfx950 (MFMA); gfx1100 (RDNA) is
/// named but refused.
class AMDGPUTargetInfo : public gpukernel::GpuTargetInfo {
public:
  llvm::ArrayRef<llvm::StringRef> names() const override;
  void checkChip(const std::string &name) const override;
  void planTiles(TilePlan &plan, const ::attn::Options &options,
                 const TileRequest &request) const override;
  void checkStage(Stage stage) const override;
  void registerDialects(DialectRegistry &registry) const override;
  void registerPasses() const override;
  std::string kernelPipeline(const TilePlan &plan, const std::string &chip,
                             llvm::StringRef variant,
                             llvm::StringRef entry) const override;
  std::string backwardPipeline(const TilePlan &plan, const std::string &chip,
                               llvm::StringRef variant) const override;
  const char *binaryKind() const override { return "amdgpu_code_object"; }
  FailureOr<GpuBinary> lowerToBinary(ModuleOp host, const TilePlan &plan,
                                     const std::string &chip, bool assemble,
                                     std::string &error) const override;
  FailureOr<std::string> lowerToText(ModuleOp host, Stage stage,
                                     const TilePlan &plan,
                                     const std::string &chip,
                                     std::string &error) const override;
};

} // namespace mlir::attn::rocm

#endif // ATTN_TARGET_AMDGPU_AMDGPUTARGETINFO_H
