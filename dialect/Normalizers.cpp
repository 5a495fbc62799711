//===- Normalizers.cpp - the dialect's normalizers, from the one table ----===//
#include "dialect/Normalizers.h"
#include "runtime/support/Normalizers.h"

#include "llvm/Support/ErrorHandling.h"

#include <iterator>

namespace mlir::attn {

// The dialect's enum (AttnBase.td) and the table are matched by name; a
// case added to one without the other fails here, and a misspelt one in
// the test FrontendTest's Normalizers.EveryKindHasADialectCase.
static_assert(getMaxEnumValForNormalize() + 1 ==
                  std::size(::attn::kNormalizers),
              "dialect/AttnBase.td's Normalize and runtime/support/"
              "Normalizers.h's kNormalizers list different normalizers");

/// The table's row for `norm`: the row of the same name.
static const ::attn::NormalizerTraits &traits(Normalize norm) {
  llvm::StringRef name = stringifyNormalize(norm);
  if (const ::attn::NormalizerTraits *t =
          ::attn::findNormalizer({name.data(), name.size()}))
    return *t;
  // Both lists are the compiler's own and their lengths agree: a name in
  // one and not the other is a typo in this source tree, not user input
  // (the dialect's parser accepts only its own cases).
  llvm::report_fatal_error("normalizer '" + name +
                           "' has no row in runtime/support/Normalizers.h");
}

bool hasRowSum(Normalize norm) { return traits(norm).rowSum; }
bool hasRunningMax(Normalize norm) { return traits(norm).runningMax; }
bool runsInLog2Domain(Normalize norm) { return traits(norm).log2Domain; }
bool allowsSink(Normalize norm) { return traits(norm).allowsSink; }

std::string rowSumNormalizerNames() {
  return ::attn::normalizerNames(
      [](const ::attn::NormalizerTraits &t) { return t.rowSum; }, " and ");
}

} // namespace mlir::attn
