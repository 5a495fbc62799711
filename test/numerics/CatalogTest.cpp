//===- CatalogTest.cpp - every catalog variant against the reference ------===//
#include "test/numerics/Bounds.h"
#include "test/numerics/Catalog.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace attn;
using namespace attn::testing;

namespace {

std::string sourceRoot() { return ATTN_SOURCE_ROOT; }

class Catalog : public ::testing::TestWithParam<CatalogCase> {};

void expectMatches(Problem p) {
  p.options.lse = hasRowSum(p);
  Outcome out = runAgainstReference(p);
  EXPECT_FALSE(out.hasNaN);
  EXPECT_LE(out.maxErrO, outputBound(out.info.outDType, out.refMaxAbsO))
      << "reference max |o| = " << out.refMaxAbsO;
  if (p.options.lse) {
    EXPECT_FALSE(out.lseInfMismatch);
    EXPECT_LE(out.maxErrLse, kLseBound);
  }
}

TEST_P(Catalog, F32) {
  expectMatches(catalogProblem(GetParam(), sourceRoot()));
}

TEST_P(Catalog, F32HeadDim128) {
  expectMatches(catalogProblem(GetParam(), sourceRoot(), 128));
}

TEST_P(Catalog, F16) {
  Problem p = catalogProblem(GetParam(), sourceRoot());
  p.options.dtype = "f16";
  expectMatches(p);
}

TEST_P(Catalog, BF16) {
  Problem p = catalogProblem(GetParam(), sourceRoot());
  p.options.dtype = "bf16";
  expectMatches(p);
}

/// The kernel's tile classification is sound (never EMPTY over a kept
/// entry, never FULL over a masked one), with small tiles so each mask
/// family crosses many tile boundaries.
TEST_P(Catalog, BlockMapIsSound) {
  Problem p = catalogProblem(GetParam(), sourceRoot(), 32);
  p.options.blockQ = 8;
  p.options.blockKV = 16;
  Outcome out = runAgainstReference(p);
  EXPECT_EQ(out.blockMap.wronglyEmpty, 0);
  EXPECT_EQ(out.blockMap.wronglyFull, 0);
  EXPECT_LE(out.maxErrO, 2e-4);
  RecordProperty("blocks", out.blockMap.blocks);
  RecordProperty("proved", out.blockMap.emptyOrFull);
  RecordProperty("uniform", out.blockMap.uniform);
}

INSTANTIATE_TEST_SUITE_P(Examples, Catalog,
                         ::testing::ValuesIn(catalogCases()),
                         [](const auto &info) { return info.param.name; });

} // namespace
