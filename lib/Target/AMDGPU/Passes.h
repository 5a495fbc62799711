//===- Passes.h - AMDGPU target passes ------------------------------------===//
#ifndef ATTN_TARGET_AMDGPU_PASSES_H
#define ATTN_TARGET_AMDGPU_PASSES_H

#include "mlir/Pass/Pass.h"

namespace mlir::attn::rocm {

#define GEN_PASS_DECL
#include "lib/Target/AMDGPU/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "lib/Target/AMDGPU/Passes.h.inc"

} // namespace mlir::attn::rocm

#endif // ATTN_TARGET_AMDGPU_PASSES_H
