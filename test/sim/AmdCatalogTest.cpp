//===- AmdCatalogTest.cpp - the AMD simulator models every shipped kernel -===//
//
// Every catalog variant and language feature compiled for gfx90a and
// gfx942 at D = 64 and 128 and for gfx950 at D = 128 (plus quantized,
// paged, sparse, select and D = 256 kernels) is loaded the way libattnsim_hip.so loads it: every
// instruction of its code object decoded by LLVM's AMDGPU disassembler and
// bound to the machine. None may be left without a model, so a launch can
// never stop on an unmodelled instruction.
//
//===----------------------------------------------------------------------===//
#include "test/numerics/Catalog.h"
#include "test/unit/GpuCases.h"

#include "lib/Driver/Compiler.h"
#include "lib/Sim/AmdMachine.h"

#include <gtest/gtest.h>

using namespace attn;
using namespace attn::testing;

namespace {

void expectModelled(const std::string &source, Options o,
                    const std::string &what) {
  SCOPED_TRACE(what);
  driver::Source parsed(source, what + ".attn");
  driver::KernelPlan plan = driver::planKernel(parsed, o);
  driver::GpuObject g = driver::compileGpuObject(parsed, plan);
  const std::string &bin = g.code.binary;
  std::unique_ptr<sim::amd::CodeObject> code;
  try {
    code = sim::amd::loadCodeObject(bin.data(), bin.size(),
                                    sim::amd::bindInstruction);
  } catch (const sim::amd::LoadError &e) {
    FAIL() << e.message;
  }
  EXPECT_EQ(code->chip, o.target);
  EXPECT_NE(code->find(g.code.entry), nullptr);
  EXPECT_NE(code->find(g.code.mergeEntry), nullptr);
  EXPECT_FALSE(code->insts.empty());
  std::string missing;
  for (const std::string &m : sim::amd::unmodelledInstructions(*code))
    missing += "\n  " + m;
  EXPECT_TRUE(missing.empty()) << "instructions without a model:" << missing;
}

class AmdSimCatalog : public ::testing::TestWithParam<CatalogCase> {};

TEST_P(AmdSimCatalog, EveryInstructionModelled) {
  // bf16 at D = 64 and 128, f16 at D = 64 (its conversions differ).
  forEachGpuTarget(
      GetParam(),
      {{"gfx90a", 64}, {"gfx90a", 128}, {"gfx942", 64}, {"gfx942", 128},
       {"gfx950", 128}},
      [](const std::string &source, Options o, const std::string &what) {
        expectModelled(source, o, what);
        if (o.headDim == 64) {
          o.dtype = "f16";
          expectModelled(source, o, what + " f16");
        }
      });
}

INSTANTIATE_TEST_SUITE_P(Examples, AmdSimCatalog,
                         ::testing::ValuesIn(catalogCases()),
                         [](const auto &info) { return info.param.name; });

TEST(AmdSim, LanguageFeaturesModelled) {
  for (const GpuFeatureCase &c : gpuFeatureCases())
    for (const char *chip : {"gfx90a", "gfx942"}) {
      Options o;
      o.target = chip;
      o.headDim = c.d;
      o.valueHeadDim = c.dv;
      o.dtype = c.dtype;
      o.lse = c.lse;
      expectModelled(c.source, o, std::string(c.name) + " " + chip);
    }
  // Rows masked or scored -inf throughout, sinks with nothing kept, and
  // key tiles narrower than the default, in both dtypes.
  for (const char *source :
       {"variant none { mask(b, h, q, kv) = false; }",
        "variant all { score(s, b, h, q, kv) = -inf; }",
        "variant drop { score(s, b, h, q, kv) = where(kv % 3 == 0, -inf, s); "
        "mask(b, h, q, kv) = kv <= q; }",
        "variant s { sink(h) = 2.0; mask(b, h, q, kv) = false; }"})
    for (const char *chip : {"gfx90a", "gfx942"})
      for (const char *dtype : {"bf16", "f16"}) {
        Options o;
        o.target = chip;
        o.headDim = 64;
        o.dtype = dtype;
        o.lse = true;
        expectModelled(source, o, std::string(source).substr(8, 5) + chip +
                                      " " + dtype);
      }
  for (int64_t blockKV : {16, 32, 48}) {
    Options o;
    o.target = "gfx942";
    o.headDim = 64;
    o.blockKV = blockKV;
    o.lse = true;
    expectModelled("variant c { mask(b, h, q, kv) = kv <= q; }", o,
                   "key tile " + std::to_string(blockKV));
  }
}

TEST(AmdSim, QuantizedPagedSparseAndSelectModelled) {
  forEachSelectServingCase({{"gfx942", "int8", 16},
                            {"gfx90a", "fp8e4m3", 0},
                            {"gfx942", "int4", 32},
                            {"gfx942", "fp8e5m2", 0}},
                           expectModelled);
  for (const char *chip : {"gfx90a", "gfx942", "gfx950"})
    for (const char *kv : {"int8", "int4", "fp8e4m3", "fp8e5m2"})
      for (int64_t group : {32, 64}) {
        Options o;
        o.target = chip;
        o.headDim = 128;
        o.kvDtype = kv;
        o.kvGroup = group;
        o.dtype = group == 32 ? "f16" : "bf16";
        o.lse = true;
        expectModelled(
            "variant w { sink(h) = 0.5; mask(b, h, q, kv) = kv <= q; }", o,
            std::string(chip) + " " + kv + " group " + std::to_string(group));
      }
  const char *sparse =
      "variant s { param budget: i32 = 256; tensor keep: i32[B, Hkv, budget];"
      " kv_index = keep; mask(b, h, q, kv) = kv <= q + (Skv - Sq); }";
  for (const char *kv : {"same", "int8", "fp8e4m3", "int4"})
    for (int64_t paged : {0, 16}) {
      Options o;
      o.target = "gfx942";
      o.headDim = 64;
      o.paged = paged;
      o.kvDtype = kv;
      o.lse = true;
      expectModelled(sparse, o,
                     std::string("sparse ") + kv + " paged " +
                         std::to_string(paged));
    }
  for (const char *chip : {"gfx90a", "gfx942"}) {
    Options o;
    o.target = chip;
    o.headDim = 256;
    o.lse = true;
    expectModelled("variant c { mask(b, h, q, kv) = kv <= q; }", o,
                   std::string("D=256 ") + chip);
  }
}

} // namespace
