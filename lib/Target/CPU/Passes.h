//===- Passes.h - CPU target passes ---------------------------------------===//
#ifndef ATTN_TARGET_CPU_PASSES_H
#define ATTN_TARGET_CPU_PASSES_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/Pass.h"

namespace mlir::attn::cpu {

#define GEN_PASS_DECL
#include "lib/Target/CPU/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "lib/Target/CPU/Passes.h.inc"

} // namespace mlir::attn::cpu

#endif // ATTN_TARGET_CPU_PASSES_H
