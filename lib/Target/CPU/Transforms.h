//===- Transforms.h - CPU target transformations as functions -------------===//
#ifndef ATTN_TARGET_CPU_TRANSFORMS_H
#define ATTN_TARGET_CPU_TRANSFORMS_H

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/IR/PatternMatch.h"

namespace mlir::attn::cpu {

/// How a CPU takes dot products of int8 codes: each i32 lane adds the four
/// products of unsigned bytes by signed ones under it.
enum class ByteDots {
  /// Codes convert to f32 for FMAs.
  none,
  /// vpdpbusd: AVX-512 VNNI (zmm; ymm with VL), or AVX-VNNI (ymm).
  vnni,
  /// vpmaddubsw + vpmaddwd (AVX2, or AVX-512 BW without VNNI): the 16-bit
  /// pair sums saturate, so operands are shaped to stay below 2^15.
  maddubs,
};
/// "none", "vnni", "maddubs" (the pass option's spelling).
std::optional<ByteDots> parseByteDots(StringRef name);

/// Rewrites a static f32 `linalg.matmul` on buffers into register-blocked
/// vector code for `lanes` f32 per register and `registers` registers.
LogicalResult vectorizeMatmul(RewriterBase &rewriter, linalg::MatmulOp op,
                              int64_t lanes, int64_t registers,
                              ByteDots byteDots = ByteDots::none,
                              bool bf16Dots = false);

/// Rewrites an int4 tile product (mlir::attn::createInt4KeyDots or
/// createInt4ValueProducts) into vector code: with byte dots, dot products
/// on the packed codes' nibbles; otherwise (or for shapes that form does
/// not take) by unpacking the codes into a tile buffer and vectorizing the
/// int8 matmul on it.
LogicalResult vectorizeInt4Product(RewriterBase &rewriter, linalg::GenericOp op,
                                   int64_t lanes, int64_t registers,
                                   ByteDots byteDots = ByteDots::none,
                                   bool bf16Dots = false);

} // namespace mlir::attn::cpu

#endif // ATTN_TARGET_CPU_TRANSFORMS_H
