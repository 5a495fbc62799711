//===- Normalizers.h - the row normalizers of `normalize = ...` -----------===//
//
// The one table of the language's normalizers (DSL.md `normalize`): each
// one's DSL name and what it implies for the row state. Everything that
// names a normalizer or asks about one reads it: the parser (names and
// messages), Sema (sinks), the import and the dialect (dialect/Normalizers.h
// answers hasRowSum, ... from here), attnrt (KernelInfo::normalize is the
// name). Header-only and dependency-free (no LLVM, MLIR or attnrt types)
// so that every layer can include it; not installed.
//
// A new normalizer is one enumerator and one row here, its case in the
// dialect's Normalize enum (dialect/AttnBase.td, matched to this table by
// name), and its math in lib/Transforms/NormalizerMath.cpp.
//
//   softmax   p = exp(t - max) / sum: online softmax. Needs each row's
//             running max, so the accumulator and row sum are rescaled when
//             it grows, and a masked score is -inf before the exp; runs in
//             the log2 domain (exp2); a sink logit joins the row sum;
//             lse = m + log l (back in natural log).
//   softplus  p = log(1 + exp(t)), o = sum p v / sum p: a row sum with no
//             max (p grows only linearly in t: nothing to shift);
//             lse = log l.
//   sigmoid, relu, relu2, laplace
//             p = f(t), o = sum p v: neither a max nor a sum; no lse
//             output, and split-KV parts simply add up. laplace is Mega's
//             (Ma et al., ICLR 2023) p = 0.5 (1 + erf((t - mu) / (sigma
//             sqrt 2))), mu = sqrt(1/2), sigma = sqrt(1/(4 pi)).
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_RUNTIME_SUPPORT_NORMALIZERS_H
#define ATTN_RUNTIME_SUPPORT_NORMALIZERS_H

#include <cstddef>
#include <iterator>
#include <string>
#include <string_view>

namespace attn {

/// The frontend's name for a normalizer (fe::NormalizeKind); the float64
/// reference switches on it.
enum class NormalizeKind { Softmax, Sigmoid, Relu, Relu2, Softplus, Laplace };

struct NormalizerTraits {
  NormalizeKind kind;
  /// The DSL spelling, also the dialect's (stringifyNormalize) and
  /// KernelInfo::normalize.
  std::string_view name;
  /// o is divided by the row sum l = sum p (0 when l is 0), so the variant
  /// has an lse output (log l, with the max added back for softmax), its
  /// backward reads that lse, and split-KV parts are merged weighted by
  /// exp(lse_i).
  bool rowSum;
  /// p depends on the row's maximum score (online softmax): a running max
  /// per row, the accumulator and row sum rescaled as it grows, and a
  /// masked score is -inf before the exp. Otherwise p = f(t) pointwise.
  bool runningMax;
  /// Scores are carried multiplied by log2(e) so that exp2 computes the exp.
  bool log2Domain;
  /// A sink logit (DSL.md `sink`) is one more entry of the denominator
  /// with no value row: it needs the running max and the row sum.
  bool allowsSink;
};

/// In the order the parser lists them in its messages.
// clang-format off
inline constexpr NormalizerTraits kNormalizers[] = {
    // kind                   name        rowSum runningMax log2Domain allowsSink
    {NormalizeKind::Softmax,  "softmax",  true,  true,      true,      true},
    {NormalizeKind::Sigmoid,  "sigmoid",  false, false,     false,     false},
    {NormalizeKind::Relu,     "relu",     false, false,     false,     false},
    {NormalizeKind::Relu2,    "relu2",    false, false,     false,     false},
    {NormalizeKind::Softplus, "softplus", true,  false,     false,     false},
    {NormalizeKind::Laplace,  "laplace",  false, false,     false,     false},
};
// clang-format on

/// The row of `kind`. Every enumerator has one (normalizerTableIsConsistent
/// below; dialect/Normalizers.cpp checks the count against AttnBase.td's),
/// so the fallback to the first row is never taken.
constexpr const NormalizerTraits &normalizerTraits(NormalizeKind kind) {
  for (const NormalizerTraits &t : kNormalizers)
    if (t.kind == kind)
      return t;
  return kNormalizers[0];
}

/// The row named `name` (the DSL spelling), or null: names come from users
/// and from bundles, so an unknown one is an answer, not a crash.
constexpr const NormalizerTraits *findNormalizer(std::string_view name) {
  for (const NormalizerTraits &t : kNormalizers)
    if (t.name == name)
      return &t;
  return nullptr;
}

/// Each enumerator has exactly one row, and each name one row.
constexpr bool normalizerTableIsConsistent() {
  constexpr std::size_t n = std::size(kNormalizers);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = i + 1; j < n; ++j)
      if (kNormalizers[i].kind == kNormalizers[j].kind ||
          kNormalizers[i].name == kNormalizers[j].name)
        return false;
  // Enumerators are 0 .. n-1: each must be some row's kind.
  for (std::size_t k = 0; k < n; ++k) {
    bool found = false;
    for (const NormalizerTraits &t : kNormalizers)
      found |= static_cast<std::size_t>(t.kind) == k;
    if (!found)
      return false;
  }
  return true;
}
static_assert(normalizerTableIsConsistent(),
              "kNormalizers needs one row per NormalizeKind, names unique");

/// The names of the normalizers `pick` accepts, in table order, joined by
/// ", " but for the last pair: "a, b or c" (lastSeparator " or ").
template <typename Pick>
std::string normalizerNames(Pick pick,
                            std::string_view lastSeparator = " or ") {
  std::size_t total = 0;
  for (const NormalizerTraits &t : kNormalizers)
    total += pick(t) ? 1 : 0;
  std::string out;
  std::size_t count = 0;
  for (const NormalizerTraits &t : kNormalizers) {
    if (!pick(t))
      continue;
    if (count > 0)
      out += count + 1 == total ? lastSeparator : std::string_view(", ");
    out += t.name;
    ++count;
  }
  return out;
}

/// Every normalizer's name: "softmax, sigmoid, ... or laplace".
inline std::string allNormalizerNames(std::string_view lastSeparator = " or ") {
  return normalizerNames([](const NormalizerTraits &) { return true; },
                         lastSeparator);
}

} // namespace attn

#endif // ATTN_RUNTIME_SUPPORT_NORMALIZERS_H
