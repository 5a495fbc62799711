//===- AmdgpuTest.cpp - AMD kernels of every variant as code objects ------===//
//
// No AMD GPU in CI: every catalog variant and every language feature is
// compiled for gfx90a and gfx942 at D = 64 and 128 into a linked code
// object, whose metadata note must report no spills and no scratch and
// whose disassembly (llvm-objdump) must use the MFMA instruction; the
// backward kernels of every variant with a backward must not spill either.
// Running the kernels needs an AMD GPU and ROCm's HIP runtime.
//
//===----------------------------------------------------------------------===//
#include "test/numerics/Catalog.h"
#include "test/unit/GpuCases.h"

#include "lib/Driver/Bundle.h"
#include "lib/Driver/Compiler.h"
#include "lib/Target/AMDGPU/AMDGPUTarget.h"
#include "attn/jit.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Program.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

using namespace attn;
using namespace attn::testing;

namespace {

/// llvm-objdump -d of a code object (empty when the tool is missing).
std::string disassemble(const std::string &object, const std::string &chip) {
  std::string tool = ATTN_LLVM_OBJDUMP;
  if (!llvm::sys::fs::can_execute(tool))
    return "";
  llvm::SmallString<128> input, output;
  int fd;
  if (llvm::sys::fs::createTemporaryFile("amdgpu", "co", fd, input) ||
      llvm::sys::fs::createTemporaryFile("amdgpu", "s", output))
    return "";
  {
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
    os << object;
  }
  std::string mcpu = "--mcpu=" + chip;
  llvm::SmallVector<llvm::StringRef> args = {tool, "-d", mcpu, input};
  std::optional<llvm::StringRef> redirects[] = {
      std::nullopt, llvm::StringRef(output), llvm::StringRef(output)};
  llvm::sys::ExecuteAndWait(tool, args, std::nullopt, redirects);
  std::ifstream in(output.c_str());
  std::string text((std::istreambuf_iterator<char>(in)), {});
  llvm::sys::fs::remove(input);
  llvm::sys::fs::remove(output);
  return text;
}

int64_t count(const std::string &text, const std::string &what) {
  int64_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos;
       at = text.find(what, at + what.size()))
    ++n;
  return n;
}

void expectMatrixCoreKernel(const std::string &source, Options o,
                            const std::string &what) {
  SCOPED_TRACE(what);
  driver::Source parsed(source, what + ".attn");
  driver::KernelPlan plan = driver::planKernel(parsed, o);
  driver::GpuObject g = driver::compileGpuObject(parsed, plan);
  ASSERT_GT(g.code.binary.size(), 4u);
  EXPECT_EQ(g.code.binary.substr(0, 4), "\x7f" "ELF");
  EXPECT_TRUE(g.code.ptx.empty());
  EXPECT_EQ(g.code.blockThreads, 256);
  EXPECT_EQ(g.code.rowsPerBlock, 64);
  EXPECT_FALSE(g.code.mergeEntry.empty());
  // The metadata note, read back independently of the compile.
  std::string error;
  auto object = mlir::attn::rocm::inspectCodeObject(g.code.binary, error);
  ASSERT_TRUE(succeeded(object)) << error;
  // The kernel, its merge and with select the two pre-pass kernels.
  bool select = g.info.selectBlock > 0;
  EXPECT_EQ(g.code.selectEntry.empty(), !select);
  EXPECT_EQ(count(object->report, "\n"), select ? 4 : 2) << object->report;
  // No memory spills: no VGPR spills, no scratch. (Uniform values past
  // the 102 SGPRs, e.g. a 2-D neighborhood mask's, park in VGPR lanes by
  // v_writelane: no memory traffic, so allowed.)
  EXPECT_EQ(object->vgprSpills, 0) << object->report;
  EXPECT_EQ(object->scratchBytes, 0) << object->report;
  EXPECT_EQ(g.spillStoreBytes, 0) << object->report;
  // CDNA: 512 registers per lane across VGPRs and AGPRs.
  EXPECT_GT(object->vgprs, 0);
  EXPECT_LE(object->vgprs + object->agprs, 512) << object->report;
  // K codes whose token groups cover whole tiles stay bytes in LDS and
  // meet Q's rounded rows on the matrix cores: int8/int4 on the integer
  // ones, fp8 on the fp8 ones (not on gfx90a, which has none).
  bool fp8 = o.kvDtype.rfind("fp8", 0) == 0;
  bool codes = (o.kvDtype == "int8" || o.kvDtype == "int4" ||
                (fp8 && o.target != "gfx90a")) &&
               source.find("kv_index") == std::string::npos &&
               g.info.kvGroup % g.info.blockKV == 0;
  // The attention kernel's own LDS (the report has a line per kernel; the
  // select pre-pass's sort buffers are its own).
  size_t line = object->report.find(g.code.entry + ":");
  ASSERT_NE(line, std::string::npos) << object->report;
  std::string entryLine = object->report.substr(
      line, object->report.find('\n', line) - line);
  size_t ldsAt = entryLine.rfind(" bytes LDS");
  ASSERT_NE(ldsAt, std::string::npos) << entryLine;
  int64_t entryLds = std::stoll(
      entryLine.substr(entryLine.rfind(' ', ldsAt - 1) + 1));
  EXPECT_EQ(entryLds,
            mlir::attn::rocm::ldsBytes(g.info.headDim, g.info.valueHeadDim,
                                       g.info.blockKV, codes))
      << object->report;
  EXPECT_LE(object->ldsBytes, 64 * 1024);
  std::string isa = disassemble(g.code.binary, o.target);
  if (isa.empty())
    return; // no llvm-objdump: the metadata checks above still ran
  // S^T and O^T per key tile: D/16 and Dv/16 MFMAs per 16 keys, each
  // 16x16x16 (f16 or bf16 in, f32 out); S^T on codes: D/32 i8 or fp8
  // MFMAs (16x16x32) per 16 keys, D/16 i8 ones on gfx90a (16x16x16).
  int64_t keyBlocks = g.info.blockKV / 16;
  int64_t codeStep = o.target == "gfx90a" ? 16 : 32;
  EXPECT_GE(count(isa, "v_mfma_f32_16x16x16"),
            keyBlocks * ((codes ? 0 : g.info.headDim / 16) +
                         g.info.valueHeadDim / 16))
      << what;
  EXPECT_EQ(count(isa, "v_mfma_i32_16x16x"),
            codes && !fp8 ? keyBlocks * g.info.headDim / codeStep : 0)
      << what;
  std::string fp8Mfma = o.kvDtype == "fp8e5m2" ? "v_mfma_f32_16x16x32_bf8_fp8"
                                               : "v_mfma_f32_16x16x32_fp8_fp8";
  EXPECT_EQ(count(isa, fp8Mfma), codes && fp8 ? keyBlocks * g.info.headDim / 32
                                              : 0)
      << what;
  EXPECT_NE(isa.find("<" + g.code.mergeEntry + ">:"), std::string::npos);
  for (const std::string &entry : {g.code.selectPoolEntry, g.code.selectEntry})
    if (!entry.empty())
      EXPECT_NE(isa.find("<" + entry + ">:"), std::string::npos);
  // Self-contained: no calls out of the kernel.
  EXPECT_EQ(isa.find("s_swappc"), std::string::npos);
}

class AmdgpuCatalog : public ::testing::TestWithParam<CatalogCase> {};

TEST_P(AmdgpuCatalog, LinksWithoutSpills) {
  forEachGpuTarget(
      GetParam(),
      {{"gfx90a", 64}, {"gfx90a", 128}, {"gfx942", 64}, {"gfx942", 128}},
      expectMatrixCoreKernel);
}

INSTANTIATE_TEST_SUITE_P(Examples, AmdgpuCatalog,
                         ::testing::ValuesIn(catalogCases()),
                         [](const auto &info) { return info.param.name; });

/// A variant's backward kernels (GpuBackward.cpp's, on AMD) in the code
/// object: both present, no VGPR spills and no scratch; prints their
/// registers. Variants with forward-only features are skipped.
void expectBackwardWithoutSpills(const std::string &source, Options o,
                                 const std::string &what) {
  SCOPED_TRACE(what);
  o.backward = true;
  driver::Source parsed(source, what + ".attn");
  driver::KernelPlan plan;
  try {
    plan = driver::planKernel(parsed, o);
  } catch (const CompileError &) {
    return; // forward-only features (the catalog's kv_index variants)
  }
  driver::GpuObject g = driver::compileGpuObject(parsed, plan);
  std::string error;
  auto object = mlir::attn::rocm::inspectCodeObject(g.code.binary, error);
  ASSERT_TRUE(succeeded(object)) << error;
  static const std::regex line(
      "(\\S+_bwd_(?:kv|q)): (\\d+) VGPRs, (\\d+) AGPRs, (\\d+) SGPRs, "
      "(\\d+) VGPR spills, (\\d+) SGPR spills, (\\d+) bytes scratch");
  int kernels = 0;
  for (std::sregex_iterator it(object->report.begin(), object->report.end(),
                               line),
       end;
       it != end; ++it, ++kernels) {
    const std::smatch &m = *it;
    std::printf("%s %s: %s VGPRs, %s AGPRs, %s VGPR spills, %s bytes "
                "scratch\n",
                what.c_str(), m[1].str().c_str(), m[2].str().c_str(),
                m[3].str().c_str(), m[5].str().c_str(), m[7].str().c_str());
    EXPECT_EQ(m[5].str(), "0") << m[1];
    EXPECT_EQ(m[7].str(), "0") << m[1];
  }
  EXPECT_EQ(kernels, 2) << object->report;
  EXPECT_EQ(object->scratchBytes, 0) << object->report;
}

// The backward kernels of every catalog variant with a backward: no spills,
// no scratch. CI runs gfx90a at D = 64, where they use the most VGPRs (up
// to 251 of 256; gfx942 up to 247, and under 100 at D = 128 and 256);
// gfx942, D = 128 and gfx942's D = 256 (and the CPU benchmark's variants
// below) with --gtest_also_run_disabled_tests.
TEST_P(AmdgpuCatalog, BackwardLinksWithoutSpills) {
  forEachGpuTarget(GetParam(), {{"gfx90a", 64}}, expectBackwardWithoutSpills);
}

TEST_P(AmdgpuCatalog, DISABLED_BackwardLinksWithoutSpillsEverywhere) {
  forEachGpuTarget(
      GetParam(),
      {{"gfx90a", 128}, {"gfx942", 64}, {"gfx942", 128}, {"gfx942", 256}},
      expectBackwardWithoutSpills);
}

/// bench/cpu/variants.attn's variants (the CPU benchmark's), likewise.
TEST(Amdgpu, DISABLED_BenchVariantsBackwardLinksWithoutSpills) {
  std::string source =
      readText(std::string(ATTN_SOURCE_ROOT) + "/bench/cpu/variants.attn");
  driver::Source parsed(source, "variants.attn");
  for (const fe::Variant &v : parsed.program.variants)
    for (auto [chip, d] : std::vector<std::pair<const char *, int64_t>>{
             {"gfx90a", 64}, {"gfx90a", 128}, {"gfx942", 64},
             {"gfx942", 128}, {"gfx942", 256}}) {
      Options o;
      o.target = chip;
      o.headDim = d;
      o.variant = v.name;
      o.lse = v.hasRowSum();
      expectBackwardWithoutSpills(source, o,
                                  v.name + " " + chip + " D=" +
                                      std::to_string(d));
    }
}

// select over paged and quantized caches links too: its pre-pass kernels
// read keys through the page table and decode codes.
TEST(Amdgpu, SelectOverPagedAndQuantizedKV) {
  forEachSelectServingCase({{"gfx942", "int8", 16},
                            {"gfx90a", "fp8e4m3", 0},
                            {"gfx942", "int4", 32}},
                           expectMatrixCoreKernel);
}

TEST(Amdgpu, LanguageFeatures) {
  for (const GpuFeatureCase &c : gpuFeatureCases())
    for (const char *chip : {"gfx90a", "gfx942"}) {
      Options o;
      o.target = chip;
      o.headDim = c.d;
      o.valueHeadDim = c.dv;
      o.dtype = c.dtype;
      o.lse = c.lse;
      expectMatrixCoreKernel(c.source, o, std::string(c.name) + " " + chip);
    }
}

// K codes whose token groups cover whole key tiles: Q.K on the matrix
// cores (Q rounded per query and tile with K's scales folded in;
// expectMatrixCoreKernel counts the MFMAs): int8 and int4 on the integer
// ones, fp8 on gfx942's (FNUZ: the OCP codes rewritten per tile) and
// gfx950's (OCP) fp8 ones; smaller groups, and fp8 on gfx90a, are
// dequantized like V.
TEST(Amdgpu, QuantizedKeysOnMatrixCores) {
  for (const char *chip : {"gfx90a", "gfx942", "gfx950"})
    for (const char *kv : {"int8", "int4", "fp8e4m3", "fp8e5m2"})
      for (int64_t group : {32, 64}) {
        Options o;
        o.target = chip;
        o.headDim = 128;
        o.kvDtype = kv;
        o.kvGroup = group;
        o.lse = true;
        expectMatrixCoreKernel(
            "variant w { sink(h) = 0.5; mask(b, h, q, kv) = kv <= q; }", o,
            std::string(chip) + " " + kv + " group " + std::to_string(group));
      }
}

// Paged pools and kv_index lists: rows found through the page table / at
// the listed positions while loading into registers; quantized codes
// dequantized (scales of the row's position) on their way to LDS.
TEST(Amdgpu, QuantizedPagedAndSparseKV) {
  const char *window =
      "variant w { param window: i32 = 512; mask(b, h, q, kv) = kv <= q + "
      "Skv - Sq && q + Skv - Sq - kv < window; }";
  const char *sparse =
      "variant s { param budget: i32 = 256; tensor keep: i32[B, Hkv, budget];"
      " kv_index = keep; mask(b, h, q, kv) = kv <= q + (Skv - Sq); }";
  for (const char *source : {window, sparse})
    for (const char *kv : {"same", "int8", "fp8e4m3", "int4"})
      for (int64_t paged : {0, 16})
        for (int64_t d : {64, 128}) {
          Options o;
          o.target = "gfx942";
          o.headDim = d;
          o.paged = paged;
          o.kvDtype = kv;
          o.lse = true;
          expectMatrixCoreKernel(source, o,
                                 std::string(source).substr(8, 1) + " " + kv +
                                     " paged " + std::to_string(paged) +
                                     " D=" + std::to_string(d));
        }
}

// D = 256: narrower key tiles keep K and V^T within 32 KiB of LDS.
TEST(Amdgpu, HeadDim256) {
  for (const char *chip : {"gfx90a", "gfx942"}) {
    Options o;
    o.target = chip;
    o.headDim = 256;
    o.lse = true;
    expectMatrixCoreKernel("variant c { mask(b, h, q, kv) = kv <= q; }", o,
                           std::string("D=256 ") + chip);
  }
}

TEST(Amdgpu, UnsupportedCombinationsAreClearErrors) {
  auto expectError = [](const std::string &source, Options o,
                        const std::string &argument,
                        const std::string &words) {
    try {
      driver::Source parsed(source, "x.attn");
      driver::compileGpuObject(parsed, driver::planKernel(parsed, o));
      ADD_FAILURE() << "expected an error naming " << argument;
    } catch (const Error &e) {
      EXPECT_EQ(e.argument(), argument) << e.what();
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos)
          << e.what();
    }
  };
  const char *causal = "variant c { mask(b, h, q, kv) = kv <= q; }";
  Options o;
  o.target = "gfx942";
  o.headDim = 64;
  Options rdna = o;
  rdna.target = "gfx1100";
  expectError(causal, rdna, "--target", "CDNA");
  Options f32 = o;
  f32.dtype = "f32";
  expectError(causal, f32, "--target", "bf16");
  Options cpAsync = o;
  cpAsync.gpuLoads = "cp.async";
  expectError(causal, cpAsync, "--gpu-loads", "NVIDIA");
  Options tma = o;
  tma.gpuLoads = "tma";
  expectError(causal, tma, "--gpu-loads", "sm_90a");
  Options wide = o;
  wide.headDim = 256;
  wide.blockKV = 64;
  expectError(causal, wide, "--block-kv", "LDS");
}

// attnrt validates a launch exactly as for other targets, then needs the
// HIP runtime; a machine without one gets an error naming the target.
TEST(Amdgpu, LaunchValidatesThenNeedsHip) {
  Jit jit("");
  Options o;
  o.target = "gfx942";
  o.headDim = 64;
  Kernel k = jit.compile("variant c { mask(b, h, q, kv) = kv <= q; }", o);
  EXPECT_EQ(k.info().target, "gfx942");
  EXPECT_EQ(k.info().dtype, DType::bf16);
  alignas(64) static uint16_t q[2 * 64 * 64], kv[2 * 64 * 64],
      out[2 * 64 * 64];
  Tensors t;
  t.q = TensorRef(q, DType::bf16, {1, 2, 64, 64});
  t.k = TensorRef(kv, DType::bf16, {1, 2, 64, 64});
  t.v = TensorRef(kv, DType::bf16, {1, 2, 64, 64});
  t.o = TensorRef(out, DType::bf16, {1, 2, 64, 64});
  Tensors wrong = t;
  wrong.v.shape[2] = 63;
  try {
    k.launch(wrong);
    ADD_FAILURE() << "expected an error naming v";
  } catch (const Error &e) {
    EXPECT_EQ(e.argument(), "v") << e.what();
  }
  if (!std::filesystem::exists("/dev/kfd")) {
    try {
      k.launch(t);
      ADD_FAILURE() << "expected no HIP runtime here";
    } catch (const Error &e) {
      EXPECT_EQ(e.argument(), "target");
      EXPECT_NE(std::string(e.what()).find("HIP"), std::string::npos)
          << e.what();
    }
  }
}

TEST(Amdgpu, BundlesCarryCodeObjects) {
  std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / "amdgpu-bundle";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  driver::Source source("variant a { mask(b, h, q, kv) = kv <= q; }\n"
                        "variant z { normalize = sigmoid; }\n",
                        "two.attn");
  Options o;
  o.target = "gfx942";
  o.headDim = 128;
  driver::writeBundle(source, o, (dir / "two").string());
  Module m = Module::load((dir / "two.attnpkg").string());
  EXPECT_EQ(m.kernelNames(), (std::vector<std::string>{"a", "z"}));
  EXPECT_EQ(m.kernel("a").info().target, "gfx942");
  std::string manifest;
  {
    std::ifstream in(dir / "two.attnpkg", std::ios::binary);
    manifest.assign(std::istreambuf_iterator<char>(in), {});
  }
  EXPECT_EQ(count(manifest, "\"kind\": \"amdgpu_code_object\""), 2);
  EXPECT_EQ(manifest.find("ptx_binary"), std::string::npos);
  EXPECT_NE(manifest.find("\"block_threads\": 256"), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(dir / "two.h"));
}

} // namespace
