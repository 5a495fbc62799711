//===- NVPTXTargetInfo.h - TargetInfo for NVIDIA GPUs ---------------------===//
#ifndef ATTN_TARGET_NVPTX_NVPTXTARGETINFO_H
#define ATTN_TARGET_NVPTX_NVPTXTARGETINFO_H

#include "lib/Target/GPU/GpuTargetInfo.h"
#include "lib/Target/NVPTX/NVPTXTarget.h"

namespace mlir::attn::nvptx {

/// sm_80 (mma.sync, cp.async) and sm_90a (wgmma, TMA).
class NVPTXTargetInfo : public gpukernel::GpuTargetInfo {
public:
  llvm::ArrayRef<llvm::StringRef> names() const override;
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
  bool assemblesHere() const override { return havePtxas(); }
  const char *binaryKind() const override { return "cubin"; }
  FailureOr<GpuBinary> lowerToBinary(ModuleOp host, const TilePlan &plan,
                                     const std::string &chip, bool assemble,
                                     std::string &error) const override;
  FailureOr<std::string> lowerToText(ModuleOp host, Stage stage,
                                     const TilePlan &plan,
                                     const std::string &chip,
                                     std::string &error) const override;
};

} // namespace mlir::attn::nvptx

#endif // ATTN_TARGET_NVPTX_NVPTXTARGETINFO_H
