//===- Passes.h - NVPTX target passes -------------------------------------===//
#ifndef ATTN_TARGET_NVPTX_PASSES_H
#define ATTN_TARGET_NVPTX_PASSES_H

#include "mlir/Pass/Pass.h"

namespace mlir::attn::nvptx {

#define GEN_PASS_DECL
#include "lib/Target/NVPTX/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "lib/Target/NVPTX/Passes.h.inc"

} // namespace mlir::attn::nvptx

#endif // ATTN_TARGET_NVPTX_PASSES_H
