//===- CPUTargetInfo.h - TargetInfo for CPUs ------------------------------===//
#ifndef ATTN_TARGET_CPU_CPUTARGETINFO_H
#define ATTN_TARGET_CPU_CPUTARGETINFO_H

#include "lib/Target/TargetInfo.h"

namespace attn::cpu {

/// This machine's CPU or one named by --cpu: tiles sized for stack
/// buffers, the tiled IR and LLVM IR stages.
class CPUTargetInfo : public mlir::attn::TargetInfo {
public:
  llvm::ArrayRef<llvm::StringRef> names() const override;
  bool isGpu() const override { return false; }
  DType defaultDType() const override { return DType::f32; }
  void checkOptions(const Options &options) const override;
  void planTiles(mlir::attn::TilePlan &plan, const Options &options,
                 const mlir::attn::TileRequest &request) const override;
  void checkStage(mlir::attn::Stage stage) const override;
  void registerDialects(mlir::DialectRegistry &registry) const override;
  void registerPasses() const override;
};


} // namespace attn::cpu

#endif // ATTN_TARGET_CPU_CPUTARGETINFO_H
