//===- GpuPlanTest.cpp - which tiles to try when a GPU kernel spills ------===//
//
// gpukernel::nextGpuPlan is the GPU targets' fit policy (the Driver only
// loops "compile, ask, retry"). Its end-to-end cases need ptxas and heavy
// variants (Nvptx.SpillingKeyTilesShrink, HeadDim256WhereItFits); here each
// rule is checked on its own, with made-up register reports, so the order
// of the rules is pinned even where no variant of the catalog reaches it.
//
//===----------------------------------------------------------------------===//
#include "lib/Target/GPU/GpuTargetInfo.h"

#include <gtest/gtest.h>

using mlir::attn::GpuFit;
using mlir::attn::TilePlan;
using mlir::attn::gpukernel::nextGpuPlan;

namespace {

/// sm_90a TMA at D = 128: 128 query rows, 64-key tiles, both automatic,
/// registers shared between warpgroups.
TilePlan hopperPlan() {
  TilePlan plan;
  plan.blockQ = 128;
  plan.blockKV = 64;
  plan.autoBlockQ = plan.autoBlockKV = true;
  plan.shareRegisters = true;
  return plan;
}

attn::KernelInfo infoAt(int64_t headDim) {
  attn::KernelInfo info;
  info.target = "sm_90a";
  info.headDim = info.valueHeadDim = headDim;
  return info;
}

GpuFit spilling() {
  GpuFit fit;
  fit.registers = 255;
  fit.spillStoreBytes = 48;
  fit.spillLoadBytes = 48;
  return fit;
}

TEST(GpuPlan, FittingKernelIsKept) {
  GpuFit fit;
  fit.registers = 168;
  EXPECT_FALSE(nextGpuPlan(hopperPlan(), hopperPlan(), fit, infoAt(128)));
}

TEST(GpuPlan, SpillingBackwardGoesScalarWithTheSameTiles) {
  GpuFit fit;
  fit.registers = 168;
  fit.backwardSpillBytes = 64;
  auto next = nextGpuPlan(hopperPlan(), hopperPlan(), fit, infoAt(128));
  ASSERT_TRUE(next);
  EXPECT_TRUE(next->scalarBackward);
  EXPECT_EQ(next->blockQ, 128);
  EXPECT_EQ(next->blockKV, 64);
  // Once scalar, a spilling backward asks for nothing more.
  EXPECT_FALSE(nextGpuPlan(hopperPlan(), *next, fit, infoAt(128)));
}

TEST(GpuPlan, UnconfirmedSharingIsRetriedUnshared) {
  // Fewer registers than setmaxnreg's budget assumes at launch: .inc
  // would wait forever, so the same tiles without sharing.
  GpuFit fit;
  fit.registers = 160;
  fit.launchRegisters = 168;
  auto next = nextGpuPlan(hopperPlan(), hopperPlan(), fit, infoAt(128));
  ASSERT_TRUE(next);
  EXPECT_FALSE(next->shareRegisters);
  EXPECT_EQ(next->blockKV, 64);
  // The unshared kernel that does not spill is the one taken.
  GpuFit unsharedFit;
  unsharedFit.registers = 200;
  EXPECT_FALSE(nextGpuPlan(hopperPlan(), *next, unsharedFit, infoAt(128)));
}

TEST(GpuPlan, SpillingUnsharedRetryShrinksKeyTilesAndSharesAgain) {
  TilePlan unshared = hopperPlan();
  unshared.shareRegisters = false;
  auto next = nextGpuPlan(hopperPlan(), unshared, spilling(), infoAt(128));
  ASSERT_TRUE(next);
  EXPECT_TRUE(next->shareRegisters);
  EXPECT_EQ(next->blockQ, 128);
  EXPECT_EQ(next->blockKV, 32);
}

TEST(GpuPlan, WideQueryTilesDropToOneWarpgroupFromTheFirstKeyTile) {
  // 128 query rows keep key tiles of at least 32; then 64 rows, and the
  // key tile starts again from the first plan's.
  TilePlan tried = hopperPlan();
  tried.blockKV = 32;
  tried.shareRegisters = false; // nothing to confirm: launchRegisters = 0
  auto next = nextGpuPlan(hopperPlan(), tried, spilling(), infoAt(128));
  ASSERT_TRUE(next);
  EXPECT_EQ(next->blockQ, 64);
  EXPECT_EQ(next->blockKV, 64);
  // At 64 rows key tiles go down to 16.
  TilePlan narrow = *next;
  narrow.blockKV = 32;
  next = nextGpuPlan(hopperPlan(), narrow, spilling(), infoAt(128));
  ASSERT_TRUE(next);
  EXPECT_EQ(next->blockKV, 16);
}

TEST(GpuPlan, FixedTilesAreNotShrunk) {
  TilePlan fixed = hopperPlan();
  fixed.autoBlockKV = fixed.autoBlockQ = false;
  // Up to D = 128 a spilling kernel is still taken.
  EXPECT_FALSE(nextGpuPlan(fixed, fixed, spilling(), infoAt(128)));
}

TEST(GpuPlan, WideHeadDimThatSpillsAtTheSmallestTilesIsAnError) {
  TilePlan smallest = hopperPlan();
  smallest.blockQ = 64;
  smallest.blockKV = 16;
  try {
    nextGpuPlan(hopperPlan(), smallest, spilling(), infoAt(256));
    FAIL() << "expected an --head-dim error";
  } catch (const attn::Error &e) {
    EXPECT_EQ(e.argument(), "--head-dim");
    EXPECT_NE(std::string(e.what()).find("D = 256, Dv = 256 does not fit in "
                                         "registers for this variant on "
                                         "sm_90a (spills 48 bytes even with "
                                         "16-key tiles)"),
              std::string::npos)
        << e.what();
  }
  // The same head dim that fits is kept.
  GpuFit fit;
  fit.registers = 240;
  EXPECT_FALSE(nextGpuPlan(hopperPlan(), smallest, fit, infoAt(256)));
}

} // namespace
