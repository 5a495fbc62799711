//===- NvptxTest.cpp - GPU kernels of every variant through ptxas ---------===//
//
// No GPU in CI: every catalog variant and every language feature is
// compiled for sm_80 and sm_90a at D = 64 and 128 and handed to ptxas
// (CUDA 13): the PTX must assemble, use the target's tensor-core
// instruction (mma.sync m16n8k16 on sm_80, wgmma.mma_async on sm_90a,
// which ptxas must not serialize) and spill nothing. Running the kernels
// is bench/gpu's job on a GPU machine.
//
//===----------------------------------------------------------------------===//
#include "test/numerics/Catalog.h"
#include "test/unit/GpuCases.h"

#include "lib/Driver/Bundle.h"
#include "lib/Driver/Compiler.h"
#include "attn/jit.h"

#include <gtest/gtest.h>

#include "lib/Sim/Ptx.h"

#include <functional>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

using namespace attn;
using namespace attn::testing;

namespace {

bool havePtxas() {
  if (std::getenv("ATTNC_PTXAS"))
    return true;
  for (const char *var : {"CUDA_HOME", "CUDA_PATH"})
    if (const char *root = std::getenv(var))
      if (std::filesystem::exists(std::string(root) + "/bin/ptxas"))
        return true;
  return std::filesystem::exists("/usr/local/cuda/bin/ptxas");
}

/// The compiled kernel, for further checks.
driver::GpuObject expectTensorCoreKernel(const std::string &source, Options o,
                                         const std::string &what) {
  SCOPED_TRACE(what);
  driver::Source parsed(source, what + ".attn");
  driver::KernelPlan plan = driver::planKernel(parsed, o);
  driver::GpuObject g = driver::compileGpuObject(parsed, plan);
  // K/V tiles stream asynchronously: TMA boxes completing on mbarriers
  // (sm_90a) or cp.async groups.
  bool tma = o.target == "sm_90a" && o.gpuLoads != "cp.async" &&
             o.kvDtype == "same" && o.paged == 0 &&
             source.find("kv_index") == std::string::npos;
  EXPECT_EQ(g.code.ptx.find("cp.async.bulk.tensor.4d") != std::string::npos, tma);
  EXPECT_EQ(g.code.ptx.find("cp.async.cg.shared.global") != std::string::npos,
            !tma);
  // Warps of 16 query rows: 4 on sm_80; on sm_90a two warpgroups sharing
  // the K/V tiles (128 rows), or one (64) where 128 rows spill. TMA adds a
  // producer warp, beside two consumer warpgroups a producer warpgroup.
  int64_t rows = g.code.rowsPerBlock;
  EXPECT_EQ(rows, g.info.blockQ);
  if (o.target == "sm_90a")
    EXPECT_TRUE(rows == 64 || rows == 128) << rows;
  else
    EXPECT_EQ(rows, 64);
  EXPECT_EQ(g.code.blockThreads, 2 * rows + (!tma          ? 0
                                             : rows == 128 ? 128
                                                           : 32));
  // setmaxnreg moves registers from the producer's warpgroup to the
  // consumers' only where the kernel is launched with the 168 registers
  // a thread its budget counts on (with fewer, setmaxnreg.inc would wait
  // forever on a GPU).
  bool shares = g.code.ptx.find("setmaxnreg") != std::string::npos;
  EXPECT_EQ(shares, g.launchRegisters > 0);
  if (shares) {
    EXPECT_TRUE(tma && rows == 128);
    EXPECT_EQ(g.launchRegisters, 168);
    EXPECT_EQ(g.registers, 168) << g.ptxasReport;
  }
  // TMA kernels run in clusters of two CTAs sharing each K/V tile by
  // multicast (issue 19): always without a mask or select, with a mask
  // that grows with the query (see Nvptx.ClustersFollowTheMask).
  // (This variant's text: a file may hold others.)
  size_t begin = source.find("variant " + g.info.name + " ");
  size_t end = source.find("\nvariant ", begin);
  std::string variantText = source.substr(begin, end - begin);
  bool clustered = g.code.clusterCtas > 1;
  EXPECT_TRUE(g.code.clusterCtas == 1 || g.code.clusterCtas == 2);
  if (!tma || variantText.find("select(") != std::string::npos)
    EXPECT_FALSE(clustered);
  else if (variantText.find("mask(") == std::string::npos)
    EXPECT_TRUE(clustered);
  EXPECT_EQ(g.code.ptx.find(".reqnctapercluster 2, 1, 1") != std::string::npos,
            clustered);
  EXPECT_EQ(g.code.ptx.find("multicast::cluster") != std::string::npos,
            clustered);
  if (o.target == "sm_90a") {
    EXPECT_NE(g.code.ptx.find("wgmma.mma_async.sync.aligned.m64n"),
              std::string::npos);
    EXPECT_EQ(g.code.ptx.find("mma.sync.aligned"), std::string::npos);
    // ptxas falls back to serialized wgmma when it cannot keep the
    // pipeline (e.g. accumulators touched between issue and wait).
    EXPECT_EQ(g.ptxasReport.find("serialized"), std::string::npos)
        << g.ptxasReport;
  } else {
    EXPECT_NE(g.code.ptx.find("mma.sync.aligned.m16n8k16.row.col.f32"),
              std::string::npos);
  }
  // Every kernel comes with its split-KV merge.
  EXPECT_FALSE(g.code.mergeEntry.empty());
  EXPECT_NE(g.code.ptx.find(".entry " + g.code.mergeEntry + "("),
            std::string::npos);
  // select's pre-pass kernels (pool the keys, choose the blocks) come
  // along exactly with select.
  bool select = g.info.selectBlock > 0;
  EXPECT_EQ(g.code.selectEntry.empty(), !select);
  EXPECT_EQ(g.code.selectPoolEntry.empty(), !select);
  for (const std::string &entry : {g.code.selectPoolEntry, g.code.selectEntry})
    if (!entry.empty())
      EXPECT_NE(g.code.ptx.find(".entry " + entry + "("), std::string::npos);
  // The functional simulator models every instruction of it (an
  // unmodelled one is a parse error naming it).
  try {
    sim::ptx::parse(g.code.ptx);
  } catch (const sim::ptx::ParseError &e) {
    ADD_FAILURE() << "the PTX simulator cannot run this kernel: " << e.what();
  }
  // Self-contained: no libdevice calls left to link.
  EXPECT_EQ(g.code.ptx.find(".extern .func"), std::string::npos);
  EXPECT_EQ(g.spillStoreBytes, 0) << g.ptxasReport;
  EXPECT_EQ(g.spillLoadBytes, 0) << g.ptxasReport;
  EXPECT_GT(g.registers, 0) << g.ptxasReport;
  EXPECT_FALSE(g.code.binary.empty());
  return g;
}

class NvptxCatalog : public ::testing::TestWithParam<CatalogCase> {};

TEST_P(NvptxCatalog, AssemblesWithoutSpills) {
  if (!havePtxas())
    GTEST_SKIP() << "no ptxas (CUDA toolkit) on this machine";
  forEachGpuTarget(
      GetParam(),
      {{"sm_80", 64}, {"sm_80", 128}, {"sm_90a", 64}, {"sm_90a", 128}},
      expectTensorCoreKernel);
}

INSTANTIATE_TEST_SUITE_P(Examples, NvptxCatalog,
                         ::testing::ValuesIn(catalogCases()),
                         [](const auto &info) { return info.param.name; });

TEST(Nvptx, LanguageFeatures) {
  if (!havePtxas())
    GTEST_SKIP() << "no ptxas (CUDA toolkit) on this machine";
  for (const GpuFeatureCase &c : gpuFeatureCases())
    for (auto [chip, loads] : {std::pair{"sm_80", "auto"},
                               std::pair{"sm_90a", "tma"},
                               std::pair{"sm_90a", "cp.async"}}) {
      Options o;
      o.target = chip;
      o.gpuLoads = loads;
      o.headDim = c.d;
      o.valueHeadDim = c.dv;
      o.dtype = c.dtype;
      o.lse = c.lse;
      expectTensorCoreKernel(c.source, o,
                             std::string(c.name) + " " + chip + " " + loads);
    }
}

// A 2-D neighborhood mask needs many more registers than a causal one:
// the automatic tiles shrink until ptxas stops spilling (on sm_90a 128
// query rows with 64-, then 32-key tiles, then 64 rows with 64, 32, 16),
// and the kernel's info (which sizes TMA boxes at launch) says which
// tiles it got.
TEST(Nvptx, SpillingKeyTilesShrink) {
  if (!havePtxas())
    GTEST_SKIP() << "no ptxas (CUDA toolkit) on this machine";
  const CatalogCase *na2d = nullptr;
  for (const CatalogCase &c : catalogCases())
    if (c.name == "na2d")
      na2d = &c;
  ASSERT_TRUE(na2d);
  Problem p = catalogProblem(*na2d, ATTN_SOURCE_ROOT);
  driver::Source parsed(p.source, p.filename);
  Options o;
  o.target = "sm_90a";
  o.headDim = 64;
  o.variant = parsed.program.variants.front().name;
  driver::KernelPlan plan = driver::planKernel(parsed, o);
  EXPECT_EQ(plan.blockKV, 64);
  EXPECT_EQ(plan.blockQ, 128);
  driver::GpuObject fitted = driver::compileGpuObject(parsed, plan);
  EXPECT_EQ(fitted.spillStoreBytes, 0) << fitted.ptxasReport;
  EXPECT_LT(fitted.info.blockKV, 64);
  EXPECT_EQ(fitted.code.blockKV, fitted.info.blockKV);
  EXPECT_EQ(fitted.info.blockQ, 64);
  EXPECT_EQ(fitted.code.rowsPerBlock, 64);
  EXPECT_EQ(fitted.code.blockThreads, 160);
  // An explicit tile is kept, spills and all.
  o.blockKV = 64;
  driver::GpuObject forced =
      driver::compileGpuObject(parsed, driver::planKernel(parsed, o));
  EXPECT_EQ(forced.info.blockKV, 64);
  EXPECT_GT(forced.spillStoreBytes, 0) << forced.ptxasReport;
}

// sm_90a: two consumer warpgroups of 64 query rows share each K/V tile
// (128 rows a CTA) by default, on both load paths; --block-q 64 keeps one.
TEST(Nvptx, HopperQueryTiles) {
  if (!havePtxas())
    GTEST_SKIP() << "no ptxas (CUDA toolkit) on this machine";
  const char *source = "variant c { mask(b, h, q, kv) = kv <= q; }";
  struct Case {
    const char *loads;
    int64_t d, blockQ, rows, threads;
  };
  for (Case c :
       {Case{"tma", 128, 0, 128, 384}, Case{"tma", 64, 0, 128, 384},
        Case{"cp.async", 128, 0, 128, 256}, Case{"tma", 128, 64, 64, 160},
        Case{"cp.async", 128, 64, 64, 128}}) {
    Options o;
    o.target = "sm_90a";
    o.gpuLoads = c.loads;
    o.headDim = c.d;
    o.blockQ = c.blockQ;
    std::string what = std::string(c.loads) + " D=" + std::to_string(c.d) +
                       " block-q " + std::to_string(c.blockQ);
    driver::GpuObject g = expectTensorCoreKernel(source, o, what);
    SCOPED_TRACE(what);
    EXPECT_EQ(g.code.rowsPerBlock, c.rows);
    EXPECT_EQ(g.info.blockQ, c.rows);
    EXPECT_EQ(g.code.blockThreads, c.threads);
    // Q: one 16-byte chunk column per 8 of D, 128 rows deep.
    EXPECT_GE(g.code.sharedBytes, c.rows * c.d * 2 + 2 * 2 * 64 * c.d * 2);
    if (std::string(c.loads) == "tma") {
      // 128-byte swizzled boxes of 64 columns: D / 64 TMA instructions per
      // tile of Q, K or V (K and V once per buffer), not D / 8.
      size_t boxes = 0;
      for (size_t at = 0;
           (at = g.code.ptx.find("cp.async.bulk.tensor.4d", at)) !=
           std::string::npos;
           ++at)
        ++boxes;
      EXPECT_EQ(int64_t(boxes), c.d / 64 * (1 + 2 * 2));
    }
  }
  // At D = 128 the consumers need more than the 168 registers a thread of
  // 384 gets at launch: the producer's warpgroup drops to 56 and theirs
  // rise to 224.
  Options o;
  o.target = "sm_90a";
  o.headDim = 128;
  driver::GpuObject g = expectTensorCoreKernel(source, o, "causal D=128");
  EXPECT_EQ(g.launchRegisters, 168);
  EXPECT_NE(g.code.ptx.find("setmaxnreg.inc.sync.aligned.u32 \t224;"),
            std::string::npos);
}

// Quantized K/V: code rows stream by cp.async. With token groups that are
// whole multiples of the key tile, Q.K runs on K's codes: int8 (and int4,
// unpacked to bytes) on int8 tensor cores on both chips, fp8 on wgmma's
// e4m3/e5m2 ones (sm_80 has no fp8 mma and decodes fp8 K to bf16), with
// K's scales folded into Q quantized per row and tile; V is dequantized
// per tile into the bf16 P.V layout. Smaller groups (scales changing
// inside a tile) dequantize K too. Every code type on both chips, for a
// masked variant with a sink.
TEST(Nvptx, QuantizedKV) {
  if (!havePtxas())
    GTEST_SKIP() << "no ptxas (CUDA toolkit) on this machine";
  const char *source =
      "variant w { param window: i32 = 512; sink(h) = 0.25; "
      "mask(b, h, q, kv) = kv <= q && q - kv < window; }";
  for (const char *kv : {"int8", "fp8e4m3", "fp8e5m2", "int4"})
    for (const char *chip : {"sm_80", "sm_90a"})
      for (int64_t d : {64, 128})
        for (int64_t group : {32, 64}) {
          Options o;
          o.target = chip;
          o.headDim = d;
          o.kvDtype = kv;
          o.kvGroup = group;
          o.lse = true;
          std::string what = std::string(kv) + " " + chip + " D=" +
                             std::to_string(d) + " group " +
                             std::to_string(group);
          driver::GpuObject g = expectTensorCoreKernel(source, o, what);
          SCOPED_TRACE(what);
          const std::string &ptx = g.code.ptx;
          bool sm90 = std::string(chip) == "sm_90a";
          bool fp8 = std::string(kv).starts_with("fp8");
          bool onCodes = group % g.code.blockKV == 0 && (sm90 || !fp8);
          std::string instruction =
              !sm90  ? "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32"
              : !fp8 ? "k32.s32.s8.s8"
                     : std::string("k32.f32.e4m3.") + (kv + 3);
          EXPECT_EQ(ptx.find(instruction) != std::string::npos, onCodes);
          // Q's codes: e4m3 by cvt, int8 by round-to-nearest-even.
          EXPECT_EQ(ptx.find("cvt.rn.satfinite.e4m3x2.f32") != std::string::npos,
                    onCodes && fp8);
        }
}

// Paged K/V: rows found through the batch's page table by cp.async (page
// ids clamped into the pool), the batch's own length as Skv; with and
// without quantized codes.
TEST(Nvptx, PagedKV) {
  if (!havePtxas())
    GTEST_SKIP() << "no ptxas (CUDA toolkit) on this machine";
  const char *source =
      "variant w { param window: i32 = 512; scale = 1.0 / sqrt(float(Skv)); "
      "mask(b, h, q, kv) = kv <= q + Skv - Sq && q + Skv - Sq - kv < window; }";
  for (const char *kv : {"same", "int8"})
    for (const char *chip : {"sm_80", "sm_90a"})
      for (int64_t d : {64, 128}) {
        Options o;
        o.target = chip;
        o.headDim = d;
        o.kvDtype = kv;
        o.paged = 16;
        o.lse = true;
        expectTensorCoreKernel(source, o,
                               std::string("paged ") + kv + " " + chip +
                                   " D=" + std::to_string(d));
      }
}

// Sparse K/V (kv_index): key tiles over the listed slots, each row loaded
// from its listed position (skipped outside [0, Skv)), the mask evaluated
// on every tile at those positions; with quantized codes and pages too.
TEST(Nvptx, SparseKV) {
  if (!havePtxas())
    GTEST_SKIP() << "no ptxas (CUDA toolkit) on this machine";
  const char *source =
      "variant s { param budget: i32 = 256; tensor keep: i32[B, Hkv, budget];"
      " kv_index = keep; mask(b, h, q, kv) = kv <= q + (Skv - Sq); }";
  for (const char *kv : {"same", "int8"})
    for (int64_t paged : {0, 16})
      for (const char *chip : {"sm_80", "sm_90a"}) {
        Options o;
        o.target = chip;
        o.headDim = 128;
        o.kvDtype = kv;
        o.paged = paged;
        o.lse = true;
        expectTensorCoreKernel(source, o,
                               std::string("kv_index ") + kv + " paged " +
                                   std::to_string(paged) + " " + chip);
      }
}

// D = 256 where it fits in registers (the tile shrinking as needed), a
// clear error naming --head-dim where it does not.
TEST(Nvptx, HeadDim256WhereItFits) {
  if (!havePtxas())
    GTEST_SKIP() << "no ptxas (CUDA toolkit) on this machine";
  for (const char *name : {"causal", "sliding_sink", "packed_docs", "alibi",
                           "softcap", "prefix_lm", "na2d"}) {
    const CatalogCase *c = nullptr;
    for (const CatalogCase &k : catalogCases())
      if (k.name == name)
        c = &k;
    ASSERT_TRUE(c) << name;
    Problem p = catalogProblem(*c, ATTN_SOURCE_ROOT);
    driver::Source parsed(p.source, p.filename);
    for (const char *chip : {"sm_80", "sm_90a"}) {
      Options o;
      o.target = chip;
      o.headDim = 256;
      o.variant = c->variant.empty() ? parsed.program.variants.front().name
                                     : c->variant;
      o.lse = true;
      std::string what = std::string(name) + " " + chip;
      if (std::string(name) == "na2d" && std::string(chip) == "sm_90a") {
        try {
          driver::compileGpuObject(parsed, driver::planKernel(parsed, o));
          ADD_FAILURE() << what << ": expected it not to fit";
        } catch (const Error &e) {
          EXPECT_EQ(e.argument(), "--head-dim") << e.what();
          EXPECT_NE(std::string(e.what()).find("does not fit"),
                    std::string::npos) << e.what();
        }
        continue;
      }
      expectTensorCoreKernel(p.source, o, what + " D=256");
    }
  }
}

TEST(Nvptx, UnsupportedCombinationsAreClearErrors) {
  auto expectError = [](Options o, const std::string &arg,
                        const std::string &text) {
    driver::Source parsed("variant p {}", "p.attn");
    try {
      driver::compileGpuObject(parsed, driver::planKernel(parsed, o),
                               /*assemble=*/false);
      ADD_FAILURE() << "expected an error: " << text;
    } catch (const Error &e) {
      EXPECT_EQ(e.argument(), arg) << e.what();
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos)
          << e.what();
    }
  };
  Options o;
  o.target = "sm_80";
  o.headDim = 64;
  Options f32 = o;
  f32.dtype = "f32";
  expectError(f32, "--target", "f16 or bf16");
  Options wide = o;
  wide.headDim = 272;
  expectError(wide, "--target", "multiples of 16 up to 256");
  Options odd = o;
  odd.headDim = 40;
  expectError(odd, "--target", "multiples of 16");
  Options pagedTma = o;
  pagedTma.target = "sm_90a";
  pagedTma.paged = 16;
  pagedTma.gpuLoads = "tma";
  expectError(pagedTma, "--gpu-loads", "stream with cp.async");
  Options quantTma = o;
  quantTma.target = "sm_90a";
  quantTma.kvDtype = "int8";
  quantTma.gpuLoads = "tma";
  expectError(quantTma, "--gpu-loads", "unquantized");
  Options rows = o;
  rows.blockQ = 128;
  expectError(rows, "--block-q", "query tiles of 64 rows");
  Options hopperRows = o;
  hopperRows.target = "sm_90a";
  hopperRows.blockQ = 32;
  expectError(hopperRows, "--block-q", "128 rows (two consumer warpgroups)");
  Options tiles = o;
  tiles.blockKV = 24;
  expectError(tiles, "--block-kv", "16, 32, 48 or 64");
  Options tmaOnAmpere = o;
  tmaOnAmpere.gpuLoads = "tma";
  expectError(tmaOnAmpere, "--gpu-loads", "sm_90a");
  Options badLoads = o;
  badLoads.gpuLoads = "dma";
  expectError(badLoads, "--gpu-loads", "auto, tma or cp.async");
}

} // namespace

namespace {

TEST(Nvptx, LaunchValidatesThenNeedsTheDriver) {
  if (!havePtxas())
    GTEST_SKIP() << "no ptxas (CUDA toolkit) on this machine";
  Jit jit("");
  Options o;
  o.target = "sm_80";
  o.headDim = 64;
  Kernel k = jit.compile("variant c { mask(b, h, q, kv) = kv <= q; }", o);
  EXPECT_EQ(k.info().target, "sm_80");
  EXPECT_EQ(k.info().dtype, DType::bf16); // the GPU default
  alignas(64) static uint16_t q[2 * 64 * 64], kv[2 * 64 * 64], out[2 * 64 * 64];
  auto tensors = [&](void *qp) {
    Tensors t;
    t.q = TensorRef(qp, DType::bf16, {1, 2, 64, 64});
    t.k = TensorRef(kv, DType::bf16, {1, 2, 64, 64});
    t.v = TensorRef(kv, DType::bf16, {1, 2, 64, 64});
    t.o = TensorRef(out, DType::bf16, {1, 2, 64, 64});
    return t;
  };
  auto expectError = [&](const Tensors &t, const std::string &arg) {
    try {
      k.launch(t);
      ADD_FAILURE() << "expected an error naming " << arg;
    } catch (const Error &e) {
      EXPECT_EQ(e.argument(), arg) << e.what();
    }
  };
  Tensors wrong = tensors(q);
  wrong.k.shape[3] = 32;
  expectError(wrong, "k");              // shapes first
  expectError(tensors(q + 1), "q");     // 16-byte rows for vector loads
  Tensors strided = tensors(q);
  strided.q.strides = {2 * 64 * 68, 64 * 68, 68, 1};
  expectError(strided, "q");
  // Everything fits: without a GPU the driver is what is missing.
  if (!std::filesystem::exists("/dev/nvidia0")) {
    try {
      k.launch(tensors(q));
      ADD_FAILURE() << "expected no CUDA driver here";
    } catch (const Error &e) {
      EXPECT_EQ(e.argument(), "target");
      EXPECT_NE(std::string(e.what()).find("GPU"), std::string::npos)
          << e.what();
    }
  }
}

// select over paged and quantized caches: the pre-pass kernels read keys
// through the page table and decode codes; all of it assembles.
TEST(Nvptx, SelectOverPagedAndQuantizedKV) {
  if (!havePtxas())
    GTEST_SKIP() << "no ptxas (CUDA toolkit) on this machine";
  forEachSelectServingCase({{"sm_80", "int8", 16},
                            {"sm_90a", "fp8e4m3", 0},
                            {"sm_90a", "int4", 32},
                            {"sm_90a", "same", 16}},
                           expectTensorCoreKernel);
}

// select's blocks are chosen on the device: a host block map is refused by
// name, before anything reaches the driver; validation still comes first.
TEST(Nvptx, SelectLaunchesValidateAndRefuseHostBlockMaps) {
  if (!havePtxas())
    GTEST_SKIP() << "no ptxas (CUDA toolkit) on this machine";
  Jit jit("");
  Options o;
  o.target = "sm_90a";
  o.headDim = 64;
  Kernel k = jit.compile("variant m { select(size = 48) = topk(2); "
                         "mask(b, h, q, kv) = kv <= q; }",
                         o);
  EXPECT_EQ(k.info().selectBlock, 48); // tiles need not divide it on GPUs
  alignas(64) static uint16_t q[2 * 100 * 64], kv[2 * 100 * 64],
      out[2 * 100 * 64];
  Tensors t;
  t.q = TensorRef(q, DType::bf16, {1, 2, 100, 64});
  t.k = TensorRef(kv, DType::bf16, {1, 2, 100, 64});
  t.v = TensorRef(kv, DType::bf16, {1, 2, 100, 64});
  t.o = TensorRef(out, DType::bf16, {1, 2, 100, 64});
  auto expectError = [&](const std::function<void()> &call,
                         const std::string &arg) {
    try {
      call();
      ADD_FAILURE() << "expected an error naming " << arg;
    } catch (const Error &e) {
      EXPECT_EQ(e.argument(), arg) << e.what();
    }
  };
  expectError([&] { k.blockMap(t); }, "block_map");
  expectError([&] { k.launch(t, {}, BlockMap{}); }, "block_map");
  Tensors wrong = t;
  wrong.v.shape[2] = 99;
  expectError([&] { k.launch(wrong); }, "v");
  if (!std::filesystem::exists("/dev/nvidia0"))
    expectError([&] { k.launch(t); }, "target");
}

} // namespace

namespace {

// Which masks run in clusters: those under which a later query row keeps
// every key an earlier one keeps (the cluster's CTAs walk the union of
// their key tiles, so a causal pair computes only the diagonal's extra
// tiles twice), not windows or documents (kept tiles at both ends).
TEST(Nvptx, ClustersFollowTheMask) {
  if (!havePtxas())
    GTEST_SKIP() << "no ptxas (CUDA toolkit) on this machine";
  Options o;
  o.target = "sm_90a";
  o.headDim = 64;
  auto clusterOf = [&](const std::string &source) {
    SCOPED_TRACE(source);
    driver::Source parsed(source, "m.attn");
    return driver::compileGpuObject(parsed, driver::planKernel(parsed, o))
        .code.clusterCtas;
  };
  EXPECT_EQ(clusterOf("variant d {}"), 2);
  EXPECT_EQ(clusterOf("variant c { mask(b, h, q, kv) = kv <= q + (Skv - Sq); }"),
            2);
  EXPECT_EQ(clusterOf("variant p { param n: i32 = 16; mask(b, h, q, kv) = "
                      "kv <= q || kv < n; }"),
            2);
  EXPECT_EQ(clusterOf("variant g { mask(b, h, q, kv) = q >= 10 && kv > 3; }"),
            2);
  EXPECT_EQ(clusterOf("variant w { mask(b, h, q, kv) = kv <= q && q - kv < "
                      "64; }"),
            1);
  EXPECT_EQ(clusterOf("variant u { mask(b, h, q, kv) = kv >= q; }"), 1);
  EXPECT_EQ(clusterOf("variant doc { tensor d: i32[B, Skv]; mask(b, h, q, "
                      "kv) = d[b, kv] == d[b, q]; }"),
            1);
  o.target = "sm_80";
  EXPECT_EQ(clusterOf("variant d {}"), 1);
  o.target = "sm_90a";
  o.gpuLoads = "cp.async";
  EXPECT_EQ(clusterOf("variant d {}"), 1);
}

TEST(Nvptx, BundlesCarryCubinAndPtx) {
  if (!havePtxas())
    GTEST_SKIP() << "no ptxas (CUDA toolkit) on this machine";
  std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / "nvptx-bundle";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  driver::Source source("variant a { mask(b, h, q, kv) = kv <= q; }\n"
                        "variant z { normalize = sigmoid; }\n",
                        "two.attn");
  Options o;
  o.target = "sm_80";
  o.headDim = 128;
  driver::writeBundle(source, o, (dir / "two").string());
  Module m = Module::load((dir / "two.attnpkg").string());
  EXPECT_EQ(m.kernelNames(), (std::vector<std::string>{"a", "z"}));
  Kernel a = m.kernel("a");
  EXPECT_EQ(a.info().target, "sm_80");
  EXPECT_EQ(a.info().headDim, 128);
  // The typed header is the same as for CPU bundles.
  EXPECT_TRUE(std::filesystem::exists(dir / "two.h"));
  // sm_90a kernels take TMA tensor maps and two consumer warpgroups of
  // 64 query rows beside a producer warpgroup; the bundle says so.
  o.target = "sm_90a";
  driver::writeBundle(source, o, (dir / "hopper").string());
  std::string manifest;
  {
    std::ifstream in(dir / "hopper.attnpkg", std::ios::binary);
    manifest.assign(std::istreambuf_iterator<char>(in), {});
  }
  EXPECT_NE(manifest.find("\"tensor_maps\": true"), std::string::npos);
  EXPECT_NE(manifest.find("\"block_threads\": 384"), std::string::npos);
  EXPECT_NE(manifest.find("\"rows_per_block\": 128"), std::string::npos);
  EXPECT_EQ(Module::load((dir / "hopper.attnpkg").string()).kernelNames(),
            (std::vector<std::string>{"a", "z"}));
  // z has no mask: its CTAs run in clusters of two (bundle format 5).
  EXPECT_NE(manifest.find("\"cluster_ctas\": 2"), std::string::npos);
  // Their tiles are swizzled (bundle format 4 on); a format-3 bundle's TMA
  // kernels read unswizzled 16-byte boxes, so one is refused, not launched
  // with maps it would misread.
  uint32_t format = 0;
  std::memcpy(&format, manifest.data() + 8, 4);
  EXPECT_EQ(format, 5u);
  std::string old = manifest;
  old[8] = 3;
  size_t json = old.find("\"format\": 5");
  ASSERT_NE(json, std::string::npos);
  old[json + 10] = '3';
  std::ofstream(dir / "old.attnpkg", std::ios::binary) << old;
  try {
    Module::load((dir / "old.attnpkg").string());
    ADD_FAILURE() << "a format-3 bundle with TMA kernels loaded";
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find(
                  "compiled by an older attnc for unswizzled tiles (bundle "
                  "format 3); recompile it with this attnc"),
              std::string::npos)
        << e.what();
  }
  // Bundles without TMA kernels keep the format older attnrts read.
  {
    std::ifstream in(dir / "two.attnpkg", std::ios::binary);
    std::string sm80(std::istreambuf_iterator<char>(in), {});
    std::memcpy(&format, sm80.data() + 8, 4);
    EXPECT_EQ(format, 2u);
  }
}

} // namespace

namespace {

// Launch geometry (no GPU needed): decode packs a GQA group per CTA and
// splits the keys until the SMs are busy; prefill does neither.
TEST(Nvptx, GpuGridPlanning) {
  using detail::planGpuGrid;
  // Decode, Llama-style GQA on an H100 (132 SMs): 4 heads per CTA, 8 CTAs,
  // 33 parts of the 1024 key tiles.
  detail::GpuGrid decode =
      planGpuGrid(1, 32, 8, 1, 65536, 64, 64, /*auto*/ 0, 132);
  EXPECT_EQ(decode.pack, 4);
  EXPECT_EQ(decode.queryTiles, 1);
  EXPECT_EQ(decode.parts, 33);
  // MQA packs up to the rows: 32 heads x 2 queries.
  detail::GpuGrid mqa = planGpuGrid(1, 32, 1, 2, 4096, 64, 64, 0, 132);
  EXPECT_EQ(mqa.pack, 32);
  EXPECT_EQ(mqa.queryTiles, 1);
  // 3 queries, group 8: 8 heads x 8 rows each.
  detail::GpuGrid odd = planGpuGrid(2, 16, 2, 3, 1000, 64, 64, 0, 132);
  EXPECT_EQ(odd.pack, 8);
  EXPECT_EQ(odd.queryTiles, 1);
  EXPECT_EQ(odd.parts, std::min<int64_t>((264 + 3) / 4, 16 / 2));
  // A group that is not a power of two packs its largest power-of-two
  // divisor (6 -> 2).
  EXPECT_EQ(planGpuGrid(1, 12, 2, 1, 4096, 64, 64, 0, 132).pack, 2);
  // Prefill: one head per CTA, enough CTAs already.
  detail::GpuGrid prefill = planGpuGrid(4, 16, 16, 4096, 4096, 64, 64, 0, 132);
  EXPECT_EQ(prefill.pack, 1);
  EXPECT_EQ(prefill.queryTiles, 64);
  EXPECT_EQ(prefill.parts, 1);
  // An explicit split is honoured up to one key tile per part.
  EXPECT_EQ(planGpuGrid(1, 8, 8, 1, 4096, 64, 64, 16, 132).parts, 16);
  EXPECT_EQ(planGpuGrid(1, 8, 8, 1, 100, 64, 64, 16, 132).parts, 2);
  // Short keys never split into parts of under two tiles.
  EXPECT_EQ(planGpuGrid(1, 8, 8, 1, 128, 64, 64, 0, 132).parts, 1);
}

} // namespace
