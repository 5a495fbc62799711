//===- Transforms.h - CPU target transformations as functions -------------===//
#ifndef ATTN_TARGET_CPU_TRANSFORMS_H
#define ATTN_TARGET_CPU_TRANSFORMS_H

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/IR/PatternMatch.h"

namespace mlir::attn::cpu {

/// Rewrites a static f32 `linalg.matmul` on buffers into register-blocked
/// vector code for `lanes` f32 per register and `registers` registers.
LogicalResult vectorizeMatmul(RewriterBase &rewriter, linalg::MatmulOp op,
                              int64_t lanes, int64_t registers,
                              bool int8Dots = false, bool bf16Dots = false);

/// Rewrites an int4 tile product (mlir::attn::createInt4KeyDots or
/// createInt4ValueProducts) into vector code: with int8Dots, byte dot
/// products on the packed codes' nibbles; otherwise (or for shapes that
/// form does not take) by unpacking the codes into a tile buffer and
/// vectorizing the int8 matmul on it.
LogicalResult vectorizeInt4Product(RewriterBase &rewriter,
                                   linalg::GenericOp op, int64_t lanes,
                                   int64_t registers, bool int8Dots = false,
                                   bool bf16Dots = false);

} // namespace mlir::attn::cpu

#endif // ATTN_TARGET_CPU_TRANSFORMS_H
