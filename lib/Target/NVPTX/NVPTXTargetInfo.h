//===- NVPTXTargetInfo.h - TargetInfo for NVIDIA GPUs ---------------------===//
#ifndef ATTN_TARGET_NVPTX_NVPTXTARGETINFO_H
#define ATTN_TARGET_NVPTX_NVPTXTARGETINFO_H

#include "lib/Target/GPU/GpuTargetInfo.h"
#include "lib/Target/NVPTX/NVPTXTarget.h"

namespace mlir::attn::nvptx {

/// The NVIDIA target (lib/Target/TargetInfo.cpp lists it). The class
/// itself is private to its .cpp: a polymorphic class with external
/// linkage would have its typeinfo both in libattnjit.so and in programs
/// that also link the compiler statically (the tests), which ASan reports
/// as an ODR violation.
const TargetInfo &nvptxTargetInfo();

} // namespace mlir::attn::nvptx

#endif // ATTN_TARGET_NVPTX_NVPTXTARGETINFO_H
