//===- AotTest.cpp - bundles, the typed header and the JIT caches ---------===//
#include "attn/jit.h"
#include "attn/runtime.h"
#include "attn/runtime_c.h"
#include "lib/Driver/Bundle.h"
#include "runtime/support/Manifest.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

using namespace attn;
namespace fs = std::filesystem;

namespace {

const char *kSource = R"(
variant window {
  param w: i32 = 8;
  tensor bias: f32[Hq];
  score(s, b, h, q, kv) = s + bias[h];
  mask(b, h, q, kv) = kv <= q && q - kv < w;
}
variant plain_relu { normalize = relu; }
)";

std::string freshDir(const std::string &name) {
  fs::path dir = fs::path(::testing::TempDir()) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

/// Runs `kernel` on fixed inputs (H heads of S queries and keys) and
/// returns o.
std::vector<float> run(const Kernel &kernel, int window, int64_t H = 2,
                       int64_t S = 37) {
  int64_t B = 1, D = 32;
  std::vector<float> q(B * H * S * D), k(q.size()), v(q.size()), o(q.size());
  for (size_t i = 0; i < q.size(); ++i) {
    q[i] = std::sin(0.37 * i);
    k[i] = std::cos(0.11 * i);
    v[i] = std::sin(0.05 * i + 2);
  }
  std::vector<float> bias(H);
  for (int64_t h = 0; h < H; ++h)
    bias[h] = h % 2 ? -0.25f : 0.5f;
  std::vector<int64_t> shape{B, H, S, D};
  Tensors t{TensorRef(q.data(), DType::f32, shape),
            TensorRef(k.data(), DType::f32, shape),
            TensorRef(v.data(), DType::f32, shape),
            TensorRef(o.data(), DType::f32, shape), std::nullopt};
  kernel.launch(t, {{"w", window}, {"bias", TensorRef(bias.data(), DType::f32,
                                                       {H})}});
  return o;
}

Options options(const std::string &variant) {
  Options o;
  o.headDim = 32;
  o.variant = variant;
  return o;
}

TEST(Jit, DiskCacheServesANewJit) {
  std::string dir = freshDir("jit-disk");
  std::vector<float> first;
  {
    Jit jit(dir);
    first = run(jit.compile(kSource, options("window")), 5);
    EXPECT_EQ(jit.stats().compiles, 1u);
    jit.compile(kSource, options("window"));
    EXPECT_EQ(jit.stats().memoryHits, 1u);
  }
  size_t files = std::distance(fs::directory_iterator(dir),
                               fs::directory_iterator());
  EXPECT_EQ(files, 2u); // the object and its record
  Jit again(dir);
  std::vector<float> second = run(again.compile(kSource, options("window")), 5);
  EXPECT_EQ(again.stats().diskHits, 1u);
  EXPECT_EQ(again.stats().compiles, 0u);
  EXPECT_EQ(first, second);
  // Other options are another entry.
  again.compile(kSource, options("plain_relu")).prepare(2, 2, 37);
  EXPECT_EQ(again.stats().compiles, 1u);
}

/// Max |a - b| over two outputs of the same size.
float maxDiff(const std::vector<float> &a, const std::vector<float> &b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// The JIT compiles a class's split-KV merge (and block-map) entries at
// their first call, into a disk cache entry of their own; a Jit that finds
// the kernel's object on disk but not theirs compiles them from the source.
TEST(Jit, CompilesTheMergeAtItsFirstCall) {
  std::string dir = freshDir("jit-deferred");
  Options o = options("window");
  o.splitKv = "4"; // 300 keys: 5 key tiles, 4 parts, then the merge
  driver::writeBundle(driver::Source(kSource, "two.attn"), o,
                      dir + "/bundle");
  std::vector<float> expected =
      run(Module::load(dir + "/bundle.attnpkg").kernel("window"), 5, 2, 300);
  fs::remove(dir + "/bundle.attnpkg");
  fs::remove(dir + "/bundle.h");
  auto files = [&] {
    return std::distance(fs::directory_iterator(dir),
                         fs::directory_iterator());
  };
  {
    Jit jit(dir);
    Kernel k = jit.compile(kSource, o);
    k.prepare(2, 2, 300);
    EXPECT_EQ(files(), 2); // the kernel's object and record
    EXPECT_EQ(run(k, 5, 2, 300), expected);
    EXPECT_EQ(files(), 4); // and the merge's
    EXPECT_EQ(jit.stats().compiles, 1u);
  }
  for (const auto &e : fs::directory_iterator(dir))
    if (e.path().filename().string().find("-deferred") != std::string::npos)
      fs::remove(e.path());
  Jit again(dir);
  EXPECT_EQ(run(again.compile(kSource, o), 5, 2, 300), expected);
  EXPECT_EQ(again.stats().diskHits, 1u);
  EXPECT_EQ(files(), 4);
}

// CPU kernels build the code of each class of launch (more than 16 rows
// per K/V head, or at most 16: decode) at its first use, each class its own
// disk cache entry; the results match a bundle's kernel, which holds every
// class in one object.
TEST(Jit, BuildsEachClassOfLaunchAtItsFirstUse) {
  std::string dir = freshDir("jit-classes");
  Options o = options("window");
  o.blockQ = 64; // wider than 16 rows: two classes
  driver::writeBundle(driver::Source(kSource, "two.attn"), o,
                      dir + "/bundle");
  Kernel whole = Module::load(dir + "/bundle.attnpkg").kernel("window");
  fs::remove(dir + "/bundle.attnpkg");
  fs::remove(dir + "/bundle.h");
  Jit jit(dir);
  Kernel lazy = jit.compile(kSource, o);
  EXPECT_EQ(lazy.info().name, "window"); // known before any code exists
  EXPECT_EQ(jit.stats().compiles, 0u);
  // Prefill: 70 rows, a 64-row tile and one of 6 (padded in this class).
  std::vector<float> prefill = run(lazy, 5, 1, 70);
  EXPECT_EQ(jit.stats().compiles, 1u);
  EXPECT_LT(maxDiff(prefill, run(whole, 5, 1, 70)), 1e-5f);
  EXPECT_EQ(run(lazy, 5, 2, 37), run(whole, 5, 2, 37));
  EXPECT_EQ(jit.stats().compiles, 1u);
  // Decode-shaped launches (3 and 16 rows) build the other class, once.
  std::vector<float> three = run(lazy, 5, 1, 3);
  EXPECT_EQ(jit.stats().compiles, 2u);
  EXPECT_LT(maxDiff(three, run(whole, 5, 1, 3)), 1e-5f);
  EXPECT_LT(maxDiff(run(lazy, 5, 1, 16), run(whole, 5, 1, 16)), 1e-5f);
  EXPECT_EQ(jit.stats().compiles, 2u);
  // 17 rows: the wide class again.
  EXPECT_LT(maxDiff(run(lazy, 5, 1, 17), run(whole, 5, 1, 17)), 1e-5f);
  EXPECT_EQ(jit.stats().compiles, 2u);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir),
                          fs::directory_iterator()),
            4); // an object and a record per class
  // A new Jit finds both classes on disk; prepare() builds ahead of a
  // launch, and the kernel outlives its Jit.
  Kernel again;
  {
    Jit fresh(dir);
    again = fresh.compile(kSource, o);
    again.prepare(1, 1, 3);
    EXPECT_EQ(fresh.stats().diskHits, 1u);
    again.prepare(1, 1, 3);
    EXPECT_EQ(fresh.stats().diskHits, 1u);
    EXPECT_EQ(fresh.stats().compiles, 0u);
  }
  EXPECT_EQ(run(again, 5, 1, 3), three);
  EXPECT_EQ(run(again, 5, 1, 70), prefill);
}

// compile() still reports what planning finds before any code is built:
// an unknown CPU too.
TEST(Jit, UnknownCpuIsAnErrorAtCompile) {
  Jit jit("");
  Options o = options("window");
  o.cpu = "pentium9000";
  try {
    jit.compile(kSource, o);
    ADD_FAILURE() << "expected an error";
  } catch (const Error &e) {
    EXPECT_EQ(e.argument(), "--cpu");
  }
}

// Query tiles of at most 16 rows have one class: decode reuses the code.
TEST(Jit, NarrowTilesHaveOneClass) {
  Jit jit("");
  Options o = options("window");
  o.blockQ = 16;
  Kernel k = jit.compile(kSource, o);
  std::vector<float> wide = run(k, 5, 1, 40);
  std::vector<float> narrow = run(k, 5, 1, 3);
  EXPECT_EQ(jit.stats().compiles, 1u);
  Kernel other = jit.compile(kSource, options("window"));
  EXPECT_LT(maxDiff(run(other, 5, 1, 3), narrow), 1e-5f);
  EXPECT_LT(maxDiff(run(other, 5, 1, 40), wide), 1e-5f);
}

// Past D = 64 the CPU key tile is 32 for decode (the few-rows class) and,
// at D = 128, 64 for every other launch: the JIT builds the classes apart.
// Kernels whose block maps or backward are laid out in info.blockKV, code
// holding both classes (rows=all, as AOT bundles build it) and explicit
// tiles keep one size.
TEST(Jit, PrefillKeyTilesAreWiderThanDecodes) {
  driver::Source source(kSource, "t.attn");
  Options o = options("plain_relu");
  o.headDim = 128;
  driver::KernelPlan plan = driver::planKernel(source, o);
  EXPECT_EQ(plan.blockKV, 32);
  EXPECT_EQ(plan.info.blockKV, 32);
  EXPECT_EQ(plan.manyRowsBlockKV, 64);
  auto tiled = [&](driver::KernelPlan p, const std::string &rows) {
    p.rows = rows;
    return driver::emitStage(source, p, driver::Stage::Tiled);
  };
  auto explicitTiles = [&](int64_t blockKV) {
    Options e = o;
    e.blockKV = blockKV;
    return driver::planKernel(source, e);
  };
  driver::KernelPlan wide = explicitTiles(64), narrow = explicitTiles(32);
  EXPECT_EQ(wide.manyRowsBlockKV, 0);
  EXPECT_EQ(narrow.manyRowsBlockKV, 0);
  EXPECT_EQ(tiled(plan, "many"), tiled(wide, "many"));
  EXPECT_EQ(tiled(plan, "few"), tiled(narrow, "few"));
  EXPECT_EQ(tiled(plan, "all"), tiled(narrow, "all"));
  EXPECT_NE(tiled(plan, "many"), tiled(narrow, "many"));

  Options masked = options("window"); // a block map
  masked.headDim = 128;
  EXPECT_EQ(driver::planKernel(source, masked).manyRowsBlockKV, 0);
  for (int64_t D : {64, 256}) {
    o.headDim = D;
    EXPECT_EQ(driver::planKernel(source, o).manyRowsBlockKV, 0) << D;
  }
}

// GPU kernels too: the record (info, entries, launch geometry), the cubin
// and the PTX; a damaged payload is rebuilt. (gpu_sim_tests runs a cached
// kernel on the simulator.)
TEST(Jit, DiskCacheKeepsGpuKernels) {
  std::string dir = freshDir("jit-gpu");
  Options o = options("window");
  o.target = "sm_90a";
  KernelInfo first;
  {
    Jit jit(dir);
    first = jit.compile(kSource, o).info();
    EXPECT_EQ(jit.stats().compiles, 1u);
  }
  EXPECT_EQ(std::distance(fs::directory_iterator(dir),
                          fs::directory_iterator()),
            3); // the record, the cubin and the PTX
  {
    Jit jit(dir);
    KernelInfo again = jit.compile(kSource, o).info();
    EXPECT_EQ(jit.stats().diskHits, 1u);
    EXPECT_EQ(jit.stats().compiles, 0u);
    EXPECT_EQ(again.name, first.name);
    EXPECT_EQ(again.target, "sm_90a");
    EXPECT_EQ(again.dtype, DType::bf16);
    EXPECT_EQ(again.blockKV, first.blockKV);
    ASSERT_EQ(again.captures.size(), 1u);
    EXPECT_EQ(again.captures[0].name, "bias");
  }
  for (const auto &entry : fs::directory_iterator(dir))
    if (entry.path().extension() == ".ptx")
      std::ofstream(entry.path(), std::ios::app) << "// changed";
  Jit jit(dir);
  jit.compile(kSource, o);
  EXPECT_EQ(jit.stats().diskHits, 0u);
  EXPECT_EQ(jit.stats().compiles, 1u);
}

TEST(Jit, CorruptOrStaleEntriesAreRebuilt) {
  std::string dir = freshDir("jit-corrupt");
  std::vector<float> good;
  {
    Jit jit(dir);
    good = run(jit.compile(kSource, options("window")), 6);
  }
  for (const auto &entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".o") {
      std::fstream f(entry.path(), std::ios::in | std::ios::out |
                                       std::ios::binary);
      f.seekp(100);
      f.write("garbage!", 8);
    }
  }
  {
    Jit jit(dir);
    EXPECT_EQ(run(jit.compile(kSource, options("window")), 6), good);
    EXPECT_EQ(jit.stats().diskHits, 0u);
    EXPECT_EQ(jit.stats().compiles, 1u);
  }
  // A record from another compiler version is stale.
  for (const auto &entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".json") {
      std::ifstream in(entry.path());
      std::stringstream ss;
      ss << in.rdbuf();
      std::string text = ss.str();
      size_t at = text.find("\"compiler\": \"");
      ASSERT_NE(at, std::string::npos);
      text.insert(at + 13, "0.0.0-old-");
      std::ofstream(entry.path()) << text;
    }
  }
  {
    Jit jit(dir);
    EXPECT_EQ(run(jit.compile(kSource, options("window")), 6), good);
    EXPECT_EQ(jit.stats().compiles, 1u);
  }
  // A record that is not JSON at all.
  for (const auto &entry : fs::directory_iterator(dir))
    if (entry.path().extension() == ".json")
      std::ofstream(entry.path()) << "{ nonsense";
  Jit jit(dir);
  EXPECT_EQ(run(jit.compile(kSource, options("window")), 6), good);
  EXPECT_EQ(jit.stats().compiles, 1u);
}

TEST(Jit, ThreadsShareOneCompile) {
  Jit jit(""); // no disk cache
  std::vector<std::thread> threads;
  std::vector<std::vector<float>> results(8);
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] {
      results[i] = run(jit.compile(kSource, options("window")), 4);
    });
  for (std::thread &t : threads)
    t.join();
  EXPECT_EQ(jit.stats().compiles, 1u);
  EXPECT_EQ(jit.stats().memoryHits, 7u);
  for (int i = 1; i < 8; ++i)
    EXPECT_EQ(results[i], results[0]);
}

TEST(Jit, ErrorsAreNotCached) {
  Jit jit("");
  EXPECT_THROW(jit.compile("variant v { mask(b, h, q, kv) = x; }",
                           options("")),
               CompileError);
  EXPECT_THROW(jit.compile("variant v { mask(b, h, q, kv) = x; }",
                           options("")),
               CompileError);
  EXPECT_EQ(jit.stats().memoryHits, 0u); // both ran the front end
}

TEST(Bundle, LoadsAndMatchesTheJit) {
  std::string dir = freshDir("bundle");
  driver::Source source(kSource, "two.attn");
  Options o;
  o.headDim = 32;
  driver::writeBundle(source, o, dir + "/two");
  ASSERT_TRUE(fs::exists(dir + "/two.attnpkg"));
  ASSERT_TRUE(fs::exists(dir + "/two.h"));
  Module m = Module::load(dir + "/two.attnpkg");
  EXPECT_EQ(m.kernelNames(),
            (std::vector<std::string>{"plain_relu", "window"}));
  Jit jit("");
  for (int w : {1, 3, 100})
    EXPECT_EQ(run(m.kernel("window"), w),
              run(jit.compile(kSource, options("window")), w));
  // Kernels outlive their Module.
  Kernel k = Module::load(dir + "/two.attnpkg").kernel("window");
  EXPECT_EQ(k.info().headDim, 32);
  EXPECT_EQ(k.info().params.at(0).defaultValue, 8.0);
  try {
    m.kernel("windw");
    ADD_FAILURE();
  } catch (const Error &e) {
    EXPECT_EQ(e.argument(), "windw");
  }
}

TEST(Bundle, SeveralBundlesStayLoadedAtOnce) {
  // Regression: bundles were loaded through /proc/self/fd/N of a memfd
  // closed right after dlopen, so the next bundle reused the path and the
  // loader handed back the first library ("lacks its entry point").
  std::string dir = freshDir("bundle-many");
  Options o;
  o.headDim = 32;
  driver::writeBundle(driver::Source(kSource, "two.attn"), o, dir + "/two");
  const char *other =
      "variant other { param w: i32 = 8; tensor bias: f32[Hq]; "
      "score(s, b, h, q, kv) = 0.5 * s - bias[h]; mask(b, h, q, kv) = kv <= "
      "q + w; }";
  driver::writeBundle(driver::Source(other, "other.attn"), o, dir + "/other");
  Module first = Module::load(dir + "/two.attnpkg");
  Module second = Module::load(dir + "/other.attnpkg");
  Module third = Module::load(dir + "/two.attnpkg");
  EXPECT_EQ(second.kernelNames(), std::vector<std::string>{"other"});
  Jit jit("");
  EXPECT_EQ(run(first.kernel("window"), 3), run(third.kernel("window"), 3));
  EXPECT_EQ(run(second.kernel("other"), 0),
            run(jit.compile(other, o), 0));
}

void expectBundleError(const std::string &path, const std::string &text) {
  try {
    Module::load(path);
    ADD_FAILURE() << "expected an error loading " << path;
  } catch (const Error &e) {
    EXPECT_EQ(e.argument(), "bundle") << e.what();
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos)
        << e.what();
  }
}

TEST(Bundle, BadFilesAreReported) {
  std::string dir = freshDir("bundle-bad");
  driver::Source source(kSource, "two.attn");
  Options o;
  o.headDim = 32;
  o.variant = "window";
  driver::writeBundle(source, o, dir + "/one");
  std::string path = dir + "/one.attnpkg";
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string bytes = ss.str();

  expectBundleError(dir + "/missing.attnpkg", "cannot open");
  std::ofstream(dir + "/text.attnpkg") << "hello";
  expectBundleError(dir + "/text.attnpkg", "not an attnc bundle");
  std::string flipped = bytes;
  flipped[flipped.size() - 100] ^= 0x5a;
  std::ofstream(dir + "/flipped.attnpkg", std::ios::binary) << flipped;
  expectBundleError(dir + "/flipped.attnpkg", "checksum mismatch");
  std::ofstream(dir + "/short.attnpkg", std::ios::binary)
      << bytes.substr(0, bytes.size() / 2);
  expectBundleError(dir + "/short.attnpkg", "truncated");
  std::string future = bytes;
  future[8] = 9; // format 9
  std::ofstream(dir + "/future.attnpkg", std::ios::binary) << future;
  expectBundleError(dir + "/future.attnpkg", "bundle format 9");
  // Format 1 predates grid-constant tensor maps: its sm_90a kernels take
  // pointers to them, so such bundles must be recompiled, not launched.
  std::string old = bytes;
  old[8] = 1;
  std::ofstream(dir + "/old.attnpkg", std::ios::binary) << old;
  expectBundleError(dir + "/old.attnpkg",
                    "bundle format 1; this attnrt reads formats 2 to 5 "
                    "(recompile it with this attnc)");
  std::string badJson = bytes;
  badJson[24] = '#';
  std::ofstream(dir + "/json.attnpkg", std::ios::binary) << badJson;
  try {
    Module::load(dir + "/json.attnpkg");
    ADD_FAILURE();
  } catch (const Error &e) {
    EXPECT_EQ(e.argument(), "manifest");
  }
}

std::string readBytes(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

uint32_t formatOf(const std::string &bytes) {
  uint32_t format;
  std::memcpy(&format, bytes.data() + 8, 4);
  return format;
}

manifest::BundleManifest manifestOf(const std::string &bytes) {
  uint64_t size;
  std::memcpy(&size, bytes.data() + 16, 8);
  return manifest::readBundleManifest(bytes.substr(24, size), "bundle");
}

/// `bytes` (a bundle) with its manifest changed by `edit` and the payload
/// offsets moved to match: a forged bundle that still loads as far as
/// what `edit` changed.
template <class Edit>
std::string forged(const std::string &bytes, Edit edit) {
  uint64_t size;
  std::memcpy(&size, bytes.data() + 16, 8);
  manifest::BundleManifest m = manifestOf(bytes);
  std::string payloads = bytes.substr(24 + size);
  int64_t first = m.binaries.at(0).offset;
  edit(m);
  std::string text;
  for (int round = 0; round < 4; ++round) {
    int64_t shift = 24 + int64_t(text.empty() ? size : text.size()) - first;
    for (manifest::BinaryEntry &b : m.binaries)
      b.offset += shift;
    first += shift;
    text = manifest::writeBundleManifest(m);
  }
  EXPECT_EQ(first, int64_t(24 + text.size()));
  std::string out = bytes.substr(0, 16);
  uint64_t newSize = text.size();
  out.append(reinterpret_cast<const char *>(&newSize), 8);
  return out + text + payloads;
}

std::string kernelInfoJson(const std::string &bundle,
                           const std::string &kernel) {
  attn_module *module = nullptr;
  EXPECT_EQ(attn_module_load(bundle.c_str(), &module), 0) << attn_last_error();
  attn_kernel *k = nullptr;
  EXPECT_EQ(attn_module_kernel(module, kernel.c_str(), &k), 0);
  std::string json(1 << 16, '\0');
  size_t needed = 0;
  EXPECT_EQ(attn_kernel_info_json(k, json.data(), json.size(), &needed), 0);
  json.resize(std::strlen(json.c_str()));
  attn_kernel_free(k);
  attn_module_free(module);
  return json;
}

bool hostHas(const std::string &feature) {
  for (const auto &[name, present] : detail::hostCpuFeatures())
    if (name == feature)
      return present;
  return false;
}

TEST(Bundle, SeveralCpusLoadTheBestTheHostRuns) {
  std::string dir = freshDir("bundle-cpus");
  driver::Source source(kSource, "two.attn");
  Options o = options("");
  o.cpu = "x86-64-v3,native"; // the lower level first: attnc orders them
  driver::writeBundle(source, o, dir + "/both");
  o.cpu = "native";
  driver::writeBundle(source, o, dir + "/native");
  o.cpu = "x86-64-v3";
  driver::writeBundle(source, o, dir + "/v3");

  // One CPU: format 2 as before (a format-2 attnrt reads it), no
  // fallbacks. Two: format 3, the native binary first.
  std::string bytes = readBytes(dir + "/both.attnpkg");
  EXPECT_EQ(formatOf(readBytes(dir + "/native.attnpkg")), 2u);
  EXPECT_EQ(formatOf(readBytes(dir + "/v3.attnpkg")), 2u);
  EXPECT_EQ(formatOf(bytes), 3u);
  EXPECT_TRUE(manifestOf(readBytes(dir + "/v3.attnpkg"))
                  .kernels.at(0)
                  .fallbackBinaries.empty());
  std::string host =
      manifestOf(readBytes(dir + "/native.attnpkg")).binaries.at(0).cpu;
  manifest::BundleManifest m = manifestOf(bytes);
  ASSERT_EQ(m.binaries.size(), 2u);
  EXPECT_EQ(m.binaries[0].cpu, host);
  EXPECT_EQ(m.binaries[1].cpu, "x86-64-v3");
  EXPECT_EQ(m.binaries[1].cpuFeatures,
            (std::vector<std::string>{"sse4.2", "avx", "avx2", "fma",
                                      "f16c"}));
  ASSERT_EQ(m.kernels.size(), 2u);
  for (const manifest::KernelEntry &k : m.kernels) {
    EXPECT_EQ(k.binary, 0);
    EXPECT_EQ(k.fallbackBinaries, std::vector<int64_t>{1});
  }

  // One kernel per variant, as ever; this machine runs the native code.
  Module both = Module::load(dir + "/both.attnpkg");
  EXPECT_EQ(both.kernelNames(),
            (std::vector<std::string>{"plain_relu", "window"}));
  Kernel k = both.kernel("window");
  EXPECT_EQ(k.info().cpu, host);
  EXPECT_EQ(Module::load(dir + "/v3.attnpkg").kernel("window").info().cpu,
            "x86-64-v3");
  if (hostHas("avx512f")) {
    // The higher level: the native binary needs AVX-512.
    EXPECT_NE(std::find(m.binaries[0].cpuFeatures.begin(),
                        m.binaries[0].cpuFeatures.end(), "avx512f"),
              m.binaries[0].cpuFeatures.end());
  }
  Kernel native = Module::load(dir + "/native.attnpkg").kernel("window");
  for (int w : {1, 3, 100})
    EXPECT_EQ(run(k, w), run(native, w));
  EXPECT_NE(kernelInfoJson(dir + "/both.attnpkg", "window")
                .find("\"cpu\": \"" + host + "\""),
            std::string::npos);

  // The typed header is the same whatever the CPUs (but for its name).
  std::string header = readBytes(dir + "/both.h");
  for (size_t at; (at = header.find("both")) != std::string::npos;)
    header.replace(at, 4, "v3");
  EXPECT_EQ(header, readBytes(dir + "/v3.h"));
}

TEST(Bundle, FallsBackToTheNextBinaryTheHostRuns) {
  // The best binary forged to need a feature no attnrt detects: the loader
  // takes the x86-64-v3 one, and it computes what a v3-only bundle does.
  std::string dir = freshDir("bundle-fallback");
  driver::Source source(kSource, "two.attn");
  Options o = options("window");
  o.cpu = "native,x86-64-v3";
  driver::writeBundle(source, o, dir + "/both");
  o.cpu = "x86-64-v3";
  driver::writeBundle(source, o, dir + "/v3");
  std::ofstream(dir + "/forged.attnpkg", std::ios::binary)
      << forged(readBytes(dir + "/both.attnpkg"),
                [](manifest::BundleManifest &m) {
                  m.binaries.at(0).cpuFeatures.push_back("avx1024");
                });
  Kernel k = Module::load(dir + "/forged.attnpkg").kernel("window");
  EXPECT_EQ(k.info().cpu, "x86-64-v3");
  Kernel v3 = Module::load(dir + "/v3.attnpkg").kernel("window");
  for (int w : {1, 3, 100})
    EXPECT_EQ(run(k, w), run(v3, w));
  EXPECT_NE(kernelInfoJson(dir + "/forged.attnpkg", "window")
                .find("\"cpu\": \"x86-64-v3\""),
            std::string::npos);
}

TEST(Bundle, NoBinaryTheHostRunsNamesWhatIsMissing) {
  std::string dir = freshDir("bundle-no-cpu");
  driver::Source source(kSource, "two.attn");
  Options o = options("window");
  o.cpu = "x86-64-v3";
  driver::writeBundle(source, o, dir + "/v3");
  // A feature this machine lacks, if any it can detect; else only an
  // undetectable one.
  std::string lacked;
  for (const auto &[name, present] : detail::hostCpuFeatures())
    if (!present)
      lacked = name;
  std::string one = dir + "/one.attnpkg";
  std::ofstream(one, std::ios::binary)
      << forged(readBytes(dir + "/v3.attnpkg"),
                [&](manifest::BundleManifest &m) {
                  if (!lacked.empty())
                    m.binaries.at(0).cpuFeatures.push_back(lacked);
                  m.binaries.at(0).cpuFeatures.push_back("avx1024");
                });
  std::string needs = "sse4.2, avx, avx2, fma, f16c" +
                      (lacked.empty() ? "" : ", " + lacked) + ", avx1024";
  std::string why = lacked.empty() ? "this attnrt cannot detect avx1024"
                                   : "this machine lacks " + lacked +
                                         ", and this attnrt cannot detect "
                                         "avx1024";
  expectBundleError(one, "'" + one +
                             "' has no code this machine's CPU can run: "
                             "kernel 'window' was compiled for CPU "
                             "'x86-64-v3' (needs " +
                             needs + "; " + why + "); recompile with --cpu "
                                                  "native");

  // Two binaries, neither of which runs here: both are described.
  o.cpu = "x86-64-v3,x86-64-v2";
  driver::writeBundle(source, o, dir + "/both");
  std::string two = dir + "/two.attnpkg";
  std::ofstream(two, std::ios::binary)
      << forged(readBytes(dir + "/both.attnpkg"),
                [](manifest::BundleManifest &m) {
                  for (manifest::BinaryEntry &b : m.binaries)
                    b.cpuFeatures.push_back("avx1024");
                });
  expectBundleError(two, "'" + two +
                             "' has no code this machine's CPU can run for "
                             "kernel 'window': its 2 binaries were compiled "
                             "for CPU 'x86-64-v3' (needs sse4.2, avx, avx2, "
                             "fma, f16c, avx1024; this attnrt cannot detect "
                             "avx1024) and CPU 'x86-64-v2' (needs sse4.2, "
                             "avx1024; this attnrt cannot detect avx1024)");
  // The C ABI reports it the same way.
  attn_module *module = nullptr;
  EXPECT_EQ(attn_module_load(two.c_str(), &module), 1);
  EXPECT_STREQ(attn_last_error_argument(), "bundle");
}

/// Sets ATTN_HIDE_CPU_FEATURES while in scope.
struct HiddenCpuFeatures {
  explicit HiddenCpuFeatures(const char *features) {
    setenv("ATTN_HIDE_CPU_FEATURES", features, 1);
  }
  ~HiddenCpuFeatures() { unsetenv("ATTN_HIDE_CPU_FEATURES"); }
};

TEST(Bundle, HiddenCpuFeaturesPickALowerLevel) {
  // ATTN_HIDE_CPU_FEATURES: the loader as on a machine without them.
  if (!hostHas("avx2"))
    GTEST_SKIP() << "needs an x86-64-v3 machine";
  std::string dir = freshDir("bundle-hidden");
  driver::Source source(kSource, "two.attn");
  Options o = options("window");
  o.cpu = "x86-64-v2,native,x86-64-v3";
  driver::writeBundle(source, o, dir + "/three");
  o.cpu = "x86-64-v3";
  driver::writeBundle(source, o, dir + "/v3");
  std::string three = dir + "/three.attnpkg";
  std::vector<float> v3 =
      run(Module::load(dir + "/v3.attnpkg").kernel("window"), 3);
  {
    HiddenCpuFeatures hide("avx512f");
    Kernel k = Module::load(three).kernel("window");
    EXPECT_EQ(k.info().cpu, "x86-64-v3");
    EXPECT_EQ(run(k, 3), v3);
  }
  {
    HiddenCpuFeatures hide("fma,avx512vnni");
    EXPECT_EQ(Module::load(three).kernel("window").info().cpu, "x86-64-v2");
  }
  {
    HiddenCpuFeatures hide("sse4.2");
    std::string host = manifestOf(readBytes(three)).binaries.at(0).cpu;
    expectBundleError(three, "'" + three +
                                 "' has no code this machine's CPU can run "
                                 "for kernel 'window': its 3 binaries were "
                                 "compiled for CPU '" + host + "' (needs ");
    expectBundleError(three, "; this machine lacks sse4.2), CPU 'x86-64-v3' "
                             "(needs sse4.2, avx, avx2, fma, f16c; this "
                             "machine lacks sse4.2) and CPU 'x86-64-v2' "
                             "(needs sse4.2; this machine lacks sse4.2) "
                             "(ATTN_HIDE_CPU_FEATURES=sse4.2 hides "
                             "features); recompile with --cpu native");
  }
  // Unset, the best binary again.
  EXPECT_NE(Module::load(three).kernel("window").info().cpu, "x86-64-v3");
}

TEST(Bundle, CpuListsAreChecked) {
  driver::Source source(kSource, "two.attn");
  std::string dir = freshDir("bundle-cpu-list");
  auto error = [&](const std::string &cpus, const std::string &target) {
    Options o = options("window");
    o.cpu = cpus;
    o.target = target;
    try {
      driver::writeBundle(source, o, dir + "/x");
    } catch (const Error &e) {
      EXPECT_EQ(e.argument(), "--cpu") << e.what();
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error("x86-64-v3,x86-64-v3", "cpu"),
            "--cpu: 'x86-64-v3' is listed twice in 'x86-64-v3,x86-64-v3'");
  EXPECT_EQ(error("x86-64-v3,,native", "cpu"),
            "--cpu: 'x86-64-v3,,native' has an empty entry; expected a CPU "
            "or a comma-separated list of CPUs (x86-64-v3,x86-64-v4)");
  EXPECT_EQ(error("x86-64-v3,pentium9000", "cpu"),
            "--cpu: unknown CPU 'pentium9000'");
  EXPECT_NE(error("x86-64-v4,skylake-avx512", "cpu")
                .find("'x86-64-v4' and 'skylake-avx512' need the same CPU "
                      "features"),
            std::string::npos);
  EXPECT_NE(error("x86-64-v4,x86-64-v3", "sm_80")
                .find("is for CPU bundles"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(dir + "/x.attnpkg"));
}

TEST(Bundle, CArgumentsPassedTwiceAreErrors) {
  // The C ABI carries K/V scales and pages by reserved names: one given
  // twice was overwritten silently (and a param twice used the first).
  std::string dir = freshDir("bundle-c-twice");
  Options o;
  o.headDim = 32;
  o.variant = "window";
  driver::writeBundle(driver::Source(kSource, "two.attn"), o, dir + "/one");
  attn_module *module = nullptr;
  ASSERT_EQ(attn_module_load((dir + "/one.attnpkg").c_str(), &module), 0)
      << attn_last_error();
  attn_kernel *kernel = nullptr;
  ASSERT_EQ(attn_module_kernel(module, "window", &kernel), 0);
  int64_t shape[4] = {1, 2, 5, 32}, headShape[1] = {2};
  std::vector<float> q(320, 0.5f), out(320, -7.0f), bias(2, 0.0f);
  attn_tensor in{q.data(), ATTN_F32, 4, shape, nullptr};
  attn_tensor o4{out.data(), ATTN_F32, 4, shape, nullptr};
  attn_tensor b1{bias.data(), ATTN_F32, 1, headShape, nullptr};
  for (const char *twice : {"k_scale", "w"}) {
    attn_arg args[3] = {};
    args[0].name = "bias";
    args[0].kind = ATTN_ARG_TENSOR;
    args[0].tensor = b1;
    for (int i = 1; i < 3; ++i) {
      args[i].name = twice;
      args[i].kind = twice[0] == 'w' ? ATTN_ARG_INT : ATTN_ARG_TENSOR;
      args[i].i = 4;
      args[i].tensor = b1;
    }
    EXPECT_EQ(attn_kernel_launch(kernel, &in, &in, &in, &o4, nullptr, args, 3,
                                 nullptr),
              1);
    EXPECT_STREQ(attn_last_error_argument(), twice);
    EXPECT_NE(std::string(attn_last_error()).find("twice"),
              std::string::npos)
        << attn_last_error();
  }
  for (float x : out)
    ASSERT_EQ(x, -7.0f);
  attn_kernel_free(kernel);
  attn_module_free(module);
}

TEST(Bundle, HeaderDeclaresTypedLaunchers) {
  driver::Source source(kSource, "two.attn");
  Options o;
  o.headDim = 32;
  std::vector<driver::KernelPlan> plans;
  for (const char *v : {"window", "plain_relu"}) {
    o.variant = v;
    plans.push_back(driver::planKernel(source, o));
  }
  std::string h = driver::launcherHeader(plans, "two", "two.attnpkg",
                                         "two.attn");
  EXPECT_NE(h.find("namespace two {"), std::string::npos);
  EXPECT_NE(h.find("struct window {"), std::string::npos);
  EXPECT_NE(h.find("int32_t w = 8;"), std::string::npos);
  EXPECT_NE(h.find("attn::TensorRef bias; // f32[Hq]"), std::string::npos);
  EXPECT_NE(h.find("struct plain_relu {"), std::string::npos);
  EXPECT_NE(h.find("static constexpr int64_t head_dim = 32;"),
            std::string::npos);
}

} // namespace

namespace {

TEST(BlockMapReuse, PrebuiltMapGivesTheSameAnswer) {
  Jit jit("");
  const char *src = R"(variant docs {
    tensor doc: i32[B, Skv];
    mask(b, h, q, kv) = doc[b, q] == doc[b, kv] && kv <= q;
  })";
  Options o;
  o.headDim = 16;
  o.blockQ = 8;
  o.blockKV = 8;
  Kernel k = jit.compile(src, o);
  int64_t B = 2, H = 3, S = 70, D = 16;
  std::vector<float> q(B * H * S * D), kk(q.size()), v(q.size()),
      o1(q.size()), o2(q.size()), o3(q.size());
  for (size_t i = 0; i < q.size(); ++i) {
    q[i] = std::sin(0.3 * i);
    kk[i] = std::cos(0.2 * i);
    v[i] = std::sin(0.1 * i);
  }
  std::vector<int32_t> doc(B * S);
  for (int64_t i = 0; i < B * S; ++i)
    doc[i] = static_cast<int32_t>((i % S) / 17 + (i / S));
  std::vector<int64_t> shape{B, H, S, D};
  auto tensors = [&](std::vector<float> &out) {
    return Tensors{TensorRef(q.data(), DType::f32, shape),
                   TensorRef(kk.data(), DType::f32, shape),
                   TensorRef(v.data(), DType::f32, shape),
                   TensorRef(out.data(), DType::f32, shape), std::nullopt};
  };
  Params params{{"doc", TensorRef(doc.data(), DType::i32, {B, S})}};
  k.launch(tensors(o1), params);
  BlockMap map = k.blockMap(tensors(o1), params);
  EXPECT_EQ(map.queryTiles, 9);
  EXPECT_EQ(map.keyTiles, 9);
  EXPECT_LT(map.density(), 0.5);
  k.launch(tensors(o2), params, map);
  EXPECT_EQ(o1, o2);
  // The mask does not read h: one head's map serves all heads.
  BlockMap oneHead = map;
  oneHead.heads = 1;
  oneHead.classes.clear();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t qt = 0; qt < map.queryTiles; ++qt)
      for (int64_t kt = 0; kt < map.keyTiles; ++kt)
        oneHead.classes.push_back(map.at(b, 0, qt, kt));
  k.launch(tensors(o3), params, oneHead);
  EXPECT_EQ(o1, o3);
  // A map for other tiles or shapes is refused by name.
  BlockMap wrong = map;
  wrong.keyTiles = 8;
  try {
    k.launch(tensors(o3), params, wrong);
    ADD_FAILURE();
  } catch (const Error &e) {
    EXPECT_EQ(e.argument(), "block_map");
  }
  wrong = map;
  wrong.blockQ = 16;
  EXPECT_THROW(k.launch(tensors(o3), params, wrong), Error);
  wrong = map;
  wrong.heads = 2;
  EXPECT_THROW(k.launch(tensors(o3), params, wrong), Error);
}

} // namespace
