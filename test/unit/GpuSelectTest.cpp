//===- GpuSelectTest.cpp - select's GPU pre-pass, run on this CPU ---------===//
//
// No GPU runs in CI, but select's pre-pass kernels only split loops over
// threads and meet at barriers, so the exact IR they are built from runs
// here one thread per block (driver::compileSelectPrePassForHost). Its kept
// map must equal the blocks the CPU kernel's select pass keeps on the same
// bf16 inputs.
//
//===----------------------------------------------------------------------===//
#include "test/numerics/Catalog.h"

#include "lib/Driver/Compiler.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace attn::testing {
namespace {

uint16_t bf16Bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}

/// Argument slots of a packed entry: memrefs as (allocated, aligned,
/// offset, sizes, strides), scalars one slot each.
class Slots {
public:
  void memref(void *data, const std::vector<int64_t> &shape) {
    pointer(data);
    pointer(data);
    slots.push_back(0);
    for (int64_t d : shape)
      slots.push_back(static_cast<uint64_t>(d));
    std::vector<int64_t> strides(shape.size(), 1);
    for (size_t i = shape.size(); i-- > 1;)
      strides[i - 1] = strides[i] * shape[i];
    for (int64_t s : strides)
      slots.push_back(static_cast<uint64_t>(s));
  }
  void memref(const TensorRef &t) {
    pointer(const_cast<void *>(t.data));
    pointer(const_cast<void *>(t.data));
    slots.push_back(0);
    for (int64_t d : t.shape)
      slots.push_back(static_cast<uint64_t>(d));
    for (int64_t st : t.effectiveStrides())
      slots.push_back(static_cast<uint64_t>(st));
  }
  void i32(int32_t v) {
    uint64_t bits = 0;
    std::memcpy(&bits, &v, 4);
    slots.push_back(bits);
  }
  void f32(float v) {
    uint64_t bits = 0;
    std::memcpy(&bits, &v, 4);
    slots.push_back(bits);
  }
  void index(int64_t v) { slots.push_back(static_cast<uint64_t>(v)); }
  std::vector<void *> pointers() {
    std::vector<void *> out;
    for (uint64_t &s : slots)
      out.push_back(&s);
    return out;
  }

private:
  void pointer(void *p) { slots.push_back(reinterpret_cast<uintptr_t>(p)); }
  std::vector<uint64_t> slots;
};

struct Shape {
  int64_t B = 2, Hq = 4, Hkv = 2, Sq, Skv, D;
};

/// The K/V layout a case runs with.
struct Layout {
  const char *kvDtype = "same";
  int64_t paged = 0;
  std::string str() const {
    return std::string(kvDtype) + (paged ? " paged " + std::to_string(paged)
                                         : std::string());
  }
};

void expectDeviceSelectionMatchesCpu(const CatalogCase &c, int64_t D,
                                     const std::string &target,
                                     const Layout &layout) {
  Problem p = catalogProblem(c, ATTN_SOURCE_ROOT, D);
  SCOPED_TRACE(c.name + " D=" + std::to_string(D) + " " + target + " " +
               layout.str());
  // Longer than the catalog's shapes, so mass(0.9) has blocks to drop;
  // not multiples of the block size.
  Shape s{2, 4, 2, p.Sq + 500, p.Skv + 500, D};
  driver::Source parsed(p.source, p.filename);
  Options o = p.options;
  o.dtype = "bf16";
  o.kvDtype = layout.kvDtype;
  o.paged = layout.paged;

  // The CPU kernel's block map: tiles of the select block size, so a tile
  // is computed exactly where its block is kept (and the mask leaves it
  // non-empty, which the catalog's kept blocks always are).
  Options cpuOptions = o;
  cpuOptions.target = "cpu";
  Kernel cpu = driver::loadCpuKernel(driver::compileCpuObject(
      parsed, driver::planKernel(parsed, cpuOptions)));
  int64_t N = cpu.info().selectBlock;
  ASSERT_GT(N, 0);
  ASSERT_EQ(cpu.info().blockQ, N);
  ASSERT_EQ(cpu.info().blockKV, N);

  std::mt19937 rng(p.seed);
  std::normal_distribution<float> normal;
  auto randomBf16 = [&](int64_t n, double scale) {
    std::vector<uint16_t> x(n);
    for (uint16_t &e : x)
      e = bf16Bits(static_cast<float>(normal(rng) * scale));
    return x;
  };
  std::vector<uint16_t> q = randomBf16(s.B * s.Hq * s.Sq * D, p.qScale);
  std::vector<uint16_t> k = randomBf16(s.B * s.Hkv * s.Skv * D, 1.0);
  std::vector<uint16_t> v = randomBf16(s.B * s.Hkv * s.Skv * D, 1.0);
  std::vector<uint16_t> out(s.B * s.Hq * s.Sq * D);
  Tensors t;
  t.q = TensorRef(q.data(), DType::bf16, {s.B, s.Hq, s.Sq, D});
  t.k = TensorRef(k.data(), DType::bf16, {s.B, s.Hkv, s.Skv, D});
  t.v = TensorRef(v.data(), DType::bf16, {s.B, s.Hkv, s.Skv, D});
  t.o = TensorRef(out.data(), cpu.info().outDType, {s.B, s.Hq, s.Sq, D});
  ASSERT_EQ(dtypeSize(cpu.info().outDType), 2u);
  // The same caches (codes, scales, a shuffled page pool) for both.
  std::optional<KVCache> cache;
  if (layout.paged || std::string(layout.kvDtype) != "same") {
    cache.emplace(KVCache::build(cpu.info(), t.k, t.v));
    cache->bind(t);
  }
  Params params;
  for (auto [name, value] : p.params)
    params.push_back({name, value});
  BlockMap expected = cpu.blockMap(t, params);

  // The device's pre-pass on the same inputs, with the attention kernel's
  // arguments as Launch.cpp packs them (one part, no packing).
  Options gpuOptions = o;
  gpuOptions.target = target;
  driver::HostPrePass pre = driver::compileSelectPrePassForHost(
      parsed, driver::planKernel(parsed, gpuOptions));
  int64_t qBlocks = (s.Sq + N - 1) / N, kBlocks = (s.Skv + N - 1) / N;
  std::vector<float> pooled(s.B * s.Hkv * kBlocks * D, -1.0f);
  std::vector<float> scores(s.B * s.Hq * qBlocks * kBlocks, -1.0f);
  std::vector<int8_t> kept(scores.size(), 7), eligible(scores.size(), 7);
  float none = 0;
  auto kernelArgs = [&](Slots &a) {
    for (const TensorRef *x : {&t.q, &t.k, &t.v, &t.o})
      a.memref(*x);
    for (const ParamInfo &info : cpu.info().params) {
      double value = info.defaultValue.value_or(0.0);
      for (auto [name, given] : p.params)
        if (name == info.name)
          value = given;
      if (info.type == DType::i32)
        a.i32(static_cast<int32_t>(value));
      else
        a.f32(static_cast<float>(value));
    }
    ASSERT_TRUE(cpu.info().captures.empty());
    if (t.kScale) {
      a.memref(*t.kScale);
      a.memref(*t.vScale);
    }
    if (t.pageTable) {
      a.memref(*t.pageTable);
      a.memref(*t.seqLens);
    }
    a.memref(kept.data(), {s.B, s.Hq, qBlocks, kBlocks});
    a.memref(&none, {0, 0, 0, 0, D});
    a.memref(&none, {0, 0, 0, 0});
    a.i32(1); // parts
    a.i32(1); // pack
  };
  Slots pool;
  kernelArgs(pool);
  pool.memref(pooled.data(), {s.B, s.Hkv, kBlocks, D});
  pool.index(kBlocks);
  pool.index(s.Hkv);
  pool.index(s.B);
  std::vector<void *> poolArgs = pool.pointers();
  pre.pool(poolArgs.data());

  Slots select;
  kernelArgs(select);
  select.memref(pooled.data(), {s.B, s.Hkv, kBlocks, D});
  select.memref(scores.data(), {s.B, s.Hq, qBlocks, kBlocks});
  select.memref(eligible.data(), {s.B, s.Hq, qBlocks, kBlocks});
  select.index(qBlocks);
  select.index(s.Hq);
  select.index(s.B);
  std::vector<void *> selectArgs = select.pointers();
  pre.select(selectArgs.data());

  ASSERT_EQ(expected.queryTiles, qBlocks);
  ASSERT_EQ(expected.keyTiles, kBlocks);
  int64_t keptBlocks = 0, eligibleBlocks = 0, mismatches = 0;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.Hq; ++h)
      for (int64_t qb = 0; qb < qBlocks; ++qb)
        for (int64_t kb = 0; kb < kBlocks; ++kb) {
          int64_t i = ((b * s.Hq + h) * qBlocks + qb) * kBlocks + kb;
          ASSERT_TRUE(kept[i] == 0 || kept[i] == 1) << int(kept[i]);
          ASSERT_TRUE(eligible[i] == 0 || eligible[i] == 1);
          keptBlocks += kept[i];
          eligibleBlocks += eligible[i];
          bool computed = expected.at(b, h, qb, kb) != BlockMap::Empty;
          if (computed != (kept[i] != 0) && mismatches++ < 10)
            ADD_FAILURE() << "b " << b << " h " << h << " query block "
                          << qb << " key block " << kb << ": CPU "
                          << (computed ? "computes" : "skips")
                          << " it, the device pre-pass "
                          << (kept[i] ? "keeps" : "drops") << " it (score "
                          << scores[i] << ")";
        }
  EXPECT_EQ(mismatches, 0);
  // The rule dropped something (else this checks little).
  EXPECT_LT(keptBlocks, eligibleBlocks);
  EXPECT_GT(keptBlocks, 0);
}

class GpuSelect : public ::testing::TestWithParam<CatalogCase> {};

TEST_P(GpuSelect, DevicePrePassKeepsWhatTheCpuKeeps) {
  // The pre-pass is built once for both vendors; each builds it inside its
  // own module.
  for (auto [target, d] : {std::pair{"sm_90a", 64}, std::pair{"sm_90a", 128},
                           std::pair{"gfx942", 128}})
    expectDeviceSelectionMatchesCpu(GetParam(), d, target, Layout{});
}

// Keys pooled through a shuffled page pool and from quantized codes (times
// K's scales) as the CPU's pre-pass reads them.
TEST_P(GpuSelect, DevicePrePassReadsPagedAndQuantizedKeys) {
  for (Layout layout : {Layout{"same", 16}, Layout{"int8", 0},
                        Layout{"fp8e4m3", 37}, Layout{"int4", 16}})
    expectDeviceSelectionMatchesCpu(GetParam(), 64, "sm_90a", layout);
}

std::vector<CatalogCase> selectCases() {
  std::vector<CatalogCase> out;
  for (const CatalogCase &c : catalogCases())
    if (c.file == std::string("select.attn"))
      out.push_back(c);
  return out;
}

INSTANTIATE_TEST_SUITE_P(Examples, GpuSelect,
                         ::testing::ValuesIn(selectCases()),
                         [](const auto &info) { return info.param.name; });

} // namespace
} // namespace attn::testing
