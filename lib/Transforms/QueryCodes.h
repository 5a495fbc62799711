//===- QueryCodes.h - a query row rounded to int8 / e4m3 codes ------------===//
//
// Where K's codes feed Q.K^T as they are (int8 or int4 codes against int8
// dot products, fp8 codes against fp8 matrix units), Q's row is rounded to
// codes of the same kind once per K scale group: x = q * K's per-channel
// scales of the group, then code = x * limit / amax(|x|), and the scores
// come back as (Q codes . K codes) * amax / limit. The CPU tiler and the
// NVPTX and AMDGPU kernels all round through these functions. What stays
// with the target: the row's absolute max (a loop on the CPU, shuffles
// within a quad on NVIDIA, lanes of a group on AMD), the e4m3 conversion
// instruction (saturating, round to nearest even) and the packing of codes
// into matrix-unit fragments.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TRANSFORMS_QUERYCODES_H
#define ATTN_TRANSFORMS_QUERYCODES_H

#include "dialect/AttnOps.h"

#include "mlir/IR/Builders.h"

namespace mlir::attn {

/// The largest code magnitude of Q's rounding against K codes of `kind`:
/// 127 for int8 and int4 K (Q takes int8 codes), e4m3's largest finite
/// value for fp8 K (448, or 240 for the FNUZ encoding).
double queryCodeLimit(KVQuant kind, bool fnuz = false);

/// A row's rounding factors from its absolute max `amax` (f32, >= 0):
/// `inverse` = limit / amax multiplies the row into code range, `scale` =
/// amax / limit turns the row's code dot products back into scores. A zero
/// row (padding past Sq) gets inverse 0, so zero codes, and scale 0.
struct QueryRowScale {
  Value inverse, scale;
};
QueryRowScale queryRowScale(OpBuilder &b, Location loc, Value amax,
                            double limit);

/// x * inverse: a row's values (f32, scalar or vector; inverse is
/// broadcast) in code range, what the target's e4m3 conversion takes.
Value scaleIntoCodeRange(OpBuilder &b, Location loc, Value x, Value inverse);

/// The int8 codes of x (f32, scalar or vector) at `inverse`: x * inverse
/// rounded to the nearest integer, ties to even, as i8 (within +-127).
Value int8QueryCodes(OpBuilder &b, Location loc, Value x, Value inverse);

} // namespace mlir::attn

#endif // ATTN_TRANSFORMS_QUERYCODES_H
