//===- AttnOps.h - attn dialect operations -------------------------------===//
#ifndef ATTN_DIALECT_ATTNOPS_H
#define ATTN_DIALECT_ATTNOPS_H

#include "dialect/AttnDialect.h"
#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/Interfaces/ControlFlowInterfaces.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#define GET_OP_CLASSES
#include "dialect/AttnOps.h.inc"

#endif // ATTN_DIALECT_ATTNOPS_H

namespace mlir::attn {
/// The DSL's integer `/` and `%` (Python floor semantics, i32 wrap-around).
/// A zero divisor gives 0 for `/` and the dividend for `%`, so user data can
/// never trap the kernel.
int32_t floorDiv(int32_t a, int32_t b);
int32_t floorMod(int32_t a, int32_t b);
} // namespace mlir::attn
