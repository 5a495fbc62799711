//===- Reference.h - float64 reference attention --------------------------===//
//
// The oracle for numerics tests: evaluates a checked variant directly from
// its AST, in double precision, one (query, key) entry at a time, with a
// plain two-pass softmax. Slow and obviously correct; never used to run
// kernels.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TEST_REFERENCE_H
#define ATTN_TEST_REFERENCE_H

#include "lib/Frontend/AST.h"

#include <cstdint>
#include <vector>

namespace attn::ref {

struct RefTensor {
  std::vector<int64_t> shape;
  std::vector<double> values; // i32 tensors hold exact integers
};

struct RefProblem {
  int64_t B = 1, Hq = 1, Hkv = 1, Sq = 1, Skv = 1, D = 64, Dv = 64;
  std::vector<double> q, k, v;      // contiguous, values as the kernel sees them
  std::vector<double> params;       // in declaration order (defaults applied)
  std::vector<RefTensor> captures;  // in declaration order
};

struct RefResult {
  std::vector<double> o;   // [B, Hq, Sq, Dv]
  std::vector<double> lse; // [B, Hq, Sq] (softmax / softplus only)
};

RefResult referenceAttention(const fe::Variant &variant, const RefProblem &p);

/// The mask alone, [B, Hq, Sq, Skv] (1 = kept); all ones without a mask.
std::vector<uint8_t> referenceMask(const fe::Variant &variant,
                                   const RefProblem &p);

} // namespace attn::ref

#endif // ATTN_TEST_REFERENCE_H
