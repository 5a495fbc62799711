//===- attn/IntMath.h - the DSL's integer division, shared everywhere -----===//
//
// Integer `/` and `%` of the .attn language: Python floor semantics on i32
// with wrap-around. A zero divisor gives 0 for `/` and the dividend for `%`
// so that user data can never trap a kernel. The compiler's folder, the
// float64 reference and the runtime's dimension checks all use these.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_INTMATH_H
#define ATTN_INTMATH_H

#include <cstdint>

namespace attn {

inline int32_t floorDiv(int32_t a, int32_t b) {
  if (b == 0)
    return 0;
  if (b == -1) // INT_MIN / -1 wraps instead of trapping
    return static_cast<int32_t>(0u - static_cast<uint32_t>(a));
  int32_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0)))
    --q;
  return q;
}

inline int32_t floorMod(int32_t a, int32_t b) {
  if (b == 0)
    return a;
  if (b == -1)
    return 0;
  int32_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0)))
    r += b;
  return r;
}

} // namespace attn

#endif // ATTN_INTMATH_H
