//===- AMDGPUTargetInfo.h - TargetInfo for AMD CDNA GPUs ------------------===//
#ifndef ATTN_TARGET_AMDGPU_AMDGPUTARGETINFO_H
#define ATTN_TARGET_AMDGPU_AMDGPUTARGETINFO_H

#include "lib/Target/AMDGPU/AMDGPUTarget.h"
#include "lib/Target/GPU/GpuTargetInfo.h"

namespace mlir::attn::rocm {

/// The AMD target (lib/Target/TargetInfo.cpp lists it). The class
/// itself is private to its .cpp: a polymorphic class with external
/// linkage would have its typeinfo both in libattnjit.so and in programs
/// that also link the compiler statically (the tests), which ASan reports
/// as an ODR violation.
const TargetInfo &amdgpuTargetInfo();

} // namespace mlir::attn::rocm

#endif // ATTN_TARGET_AMDGPU_AMDGPUTARGETINFO_H
