//===- TargetInfo.cpp - the targets attnc compiles for --------------------===//
#include "lib/Target/TargetInfo.h"

#include "lib/Target/AMDGPU/AMDGPUTargetInfo.h"
#include "lib/Target/CPU/CPUTargetInfo.h"
#include "lib/Target/NVPTX/NVPTXTargetInfo.h"

namespace mlir::attn {

namespace {

llvm::ArrayRef<const TargetInfo *> allTargets() {
  static const TargetInfo *targets[] = {&::attn::cpu::cpuTargetInfo(),
                                        &nvptx::nvptxTargetInfo(),
                                        &rocm::amdgpuTargetInfo()};
  return targets;
}

} // namespace

const TargetInfo *lookupTarget(llvm::StringRef name) {
  for (const TargetInfo *t : allTargets())
    if (llvm::is_contained(t->names(), name))
      return t;
  return nullptr;
}

std::vector<std::string> allTargetNames() {
  std::vector<std::string> names;
  for (const TargetInfo *t : allTargets())
    for (llvm::StringRef name : t->names())
      names.push_back(name.str());
  return names;
}

void registerTargetDialects(DialectRegistry &registry) {
  for (const TargetInfo *t : allTargets())
    t->registerDialects(registry);
}

void registerTargetPasses() {
  for (const TargetInfo *t : allTargets())
    t->registerPasses();
}

} // namespace mlir::attn
