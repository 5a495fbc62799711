//===- RuntimeTest.cpp - launch validation and the attnc command line -----===//
#include "attn/jit.h"
#include "attn/npy.h"
#include "attn/runtime.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sys/wait.h>

using namespace attn;

namespace {

/// A small launch whose buffers the tests then break one at a time.
struct Launch {
  int64_t B = 1, Hq = 4, Hkv = 2, Sq = 9, Skv = 11, D = 16, Dv = 8;
  std::vector<float> q, k, v, o, lse, bias;
  std::vector<int32_t> doc;
  Kernel kernel;

  Launch() {
    // A static Jit, destroyed at exit: regression test for engines torn
    // down after LLVM's own statics (crashed at exit before).
    static Jit jit;
    Options opts;
    opts.headDim = D;
    opts.valueHeadDim = Dv;
    opts.lse = true;
    kernel = jit.compile(R"(variant t {
      param window: i32; param temp: f32 = 1.0;
      tensor doc: i32[B, Skv]; tensor bias: f32[Hq];
      score(s, b, h, q, kv) = s * temp + bias[h];
      mask(b, h, q, kv) = doc[b, kv] >= 0 && q - kv < window; })",
                         opts);
    q.assign(B * Hq * Sq * D, 0.5f);
    k.assign(B * Hkv * Skv * D, 0.25f);
    v.assign(B * Hkv * Skv * Dv, 1.0f);
    o.assign(B * Hq * Sq * Dv, -7.0f); // sentinel: must survive failures
    lse.assign(B * Hq * Sq, -7.0f);
    bias.assign(Hq, 0.0f);
    doc.assign(B * Skv, 0);
  }
  Tensors tensors() {
    return Tensors{TensorRef(q.data(), DType::f32, {B, Hq, Sq, D}),
                   TensorRef(k.data(), DType::f32, {B, Hkv, Skv, D}),
                   TensorRef(v.data(), DType::f32, {B, Hkv, Skv, Dv}),
                   TensorRef(o.data(), DType::f32, {B, Hq, Sq, Dv}),
                   TensorRef(lse.data(), DType::f32, {B, Hq, Sq})};
  }
  Params params() {
    return {{"window", 4},
            {"doc", TensorRef(doc.data(), DType::i32, {B, Skv})},
            {"bias", TensorRef(bias.data(), DType::f32, {Hq})}};
  }
  bool untouched() const {
    for (float x : o)
      if (x != -7.0f)
        return false;
    for (float x : lse)
      if (x != -7.0f)
        return false;
    return true;
  }
};

/// Expects launch() to throw attn::Error naming `argument` with `text` in
/// the message, and nothing written.
template <typename Fn>
void expectRejected(Launch &l, Fn breakIt, const std::string &argument,
                    const std::string &text) {
  Tensors t = l.tensors();
  Params p = l.params();
  breakIt(t, p);
  try {
    l.kernel.launch(t, p);
    ADD_FAILURE() << "expected an error naming " << argument;
  } catch (const Error &e) {
    EXPECT_EQ(e.argument(), argument) << e.what();
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
  EXPECT_TRUE(l.untouched());
}

TEST(Runtime, ValidLaunchWrites) {
  Launch l;
  l.kernel.launch(l.tensors(), l.params());
  EXPECT_FALSE(l.untouched());
  EXPECT_NEAR(l.o[0], 1.0f, 1e-6); // every v row is 1
}

TEST(Runtime, ShapesDTypesAndStrides) {
  Launch l;
  expectRejected(l, [&](Tensors &t, Params &) { t.q.dtype = DType::f16; },
                 "q", "expected dtype f32, got f16");
  expectRejected(l, [&](Tensors &t, Params &) { t.k.shape = {1, 2, 11}; },
                 "k", "expected 4 dimensions [B, Hkv, Skv, D], got 3");
  expectRejected(l, [&](Tensors &t, Params &) { t.k.shape[3] = 8; }, "k",
                 "dimension 3 (D) is 8, expected 16");
  expectRejected(l, [&](Tensors &t, Params &) { t.k.shape[1] = 3; }, "k",
                 "not a multiple of Hkv = 3");
  expectRejected(l, [&](Tensors &t, Params &) { t.v.shape[2] = 10; }, "v",
                 "dimension 2 (Skv) is 10, expected 11");
  expectRejected(l, [&](Tensors &t, Params &) { t.o.shape[2] = 8; }, "o",
                 "dimension 2 (Sq) is 8, expected 9");
  expectRejected(l, [&](Tensors &t, Params &) { t.o.dtype = DType::bf16; },
                 "o", "expected dtype f32, got bf16");
  expectRejected(l, [&](Tensors &t, Params &) { t.lse->shape = {1, 4, 8}; },
                 "lse", "dimension 2 (Sq) is 8, expected 9");
  expectRejected(l, [&](Tensors &t, Params &) { t.lse.reset(); }, "lse",
                 "compiled with lse");
  expectRejected(l,
                 [&](Tensors &t, Params &) {
                   t.q.strides = {4 * 9 * 32, 9 * 32, 32, 2};
                 },
                 "q", "innermost dimension must be contiguous");
  expectRejected(l,
                 [&](Tensors &t, Params &) { t.o.strides = {0, 0, 0, 1}; },
                 "o", "overlap");
  expectRejected(l, [&](Tensors &t, Params &) { t.o.data = l.k.data(); }, "o",
                 "overlaps k or v");
  expectRejected(l, [&](Tensors &t, Params &) { t.q.data = nullptr; }, "q",
                 "null data pointer");
  expectRejected(l,
                 [&](Tensors &t, Params &) {
                   t.q.data = reinterpret_cast<char *>(l.q.data()) + 1;
                 },
                 "q", "not aligned");
  expectRejected(l, [&](Tensors &t, Params &) { t.k.shape[0] = 2; }, "k",
                 "dimension 0 (B) is 2, expected 1");
}

TEST(Runtime, ParamsAndCapturedTensors) {
  Launch l;
  expectRejected(l, [&](Tensors &, Params &p) { p.erase(p.begin()); },
                 "window", "param has no default");
  expectRejected(l, [&](Tensors &, Params &p) { p.push_back({"windw", 3}); },
                 "windw", "did you mean 'window'?");
  expectRejected(l, [&](Tensors &, Params &p) { p[0].second = Arg(2.5); },
                 "window", "non-integer");
  expectRejected(l,
                 [&](Tensors &, Params &p) { p[0].second = Arg(int64_t(1) << 40); },
                 "window", "does not fit in i32");
  expectRejected(l, [&](Tensors &, Params &p) { p.erase(p.begin() + 1); },
                 "doc", "missing captured tensor i32[B, Skv]");
  expectRejected(l, [&](Tensors &, Params &p) { p[1].second = Arg(3); },
                 "doc", "got a number");
  expectRejected(l,
                 [&](Tensors &, Params &p) {
                   p[1].second = TensorRef(l.doc.data(), DType::i32, {1, 10});
                 },
                 "doc", "dimension 1 is 10, expected Skv = 11");
  expectRejected(l,
                 [&](Tensors &, Params &p) {
                   p[2].second = TensorRef(l.bias.data(), DType::f16, {4});
                 },
                 "bias", "expected dtype f32, got f16");
  expectRejected(l,
                 [&](Tensors &, Params &p) {
                   p[0].second = TensorRef(l.bias.data(), DType::f32, {4});
                 },
                 "window", "got a tensor");
  expectRejected(l,
                 [&](Tensors &, Params &p) {
                   p[2].second = TensorRef(l.o.data(), DType::f32, {4});
                 },
                 "bias", "overlaps an output");
}

/// The reproducers of issue 21 (shape [1, 2, 8, 64] f32, strides
/// [1024, S, 64, 1]): strides whose byte offsets do not fit in 64 bits, or
/// that run past the end of the address space, are errors naming the view,
/// never a wrapped range that passes the overlap checks.
struct Strided {
  std::vector<float> q, k, v, o, lse;
  Kernel kernel;
  Strided() {
    static Jit jit;
    Options opts;
    opts.headDim = 64;
    opts.lse = true;
    kernel = jit.compile("variant plain {}", opts);
    q.assign(2 * 8 * 64, 0.5f);
    k = v = q;
    o.assign(2 * 8 * 64, -7.0f);
    lse.assign(2 * 8, -7.0f);
  }
  static TensorRef view(void *data, int64_t headStride) {
    return TensorRef(data, DType::f32, {1, 2, 8, 64},
                     {1024, headStride, 64, 1});
  }
  Tensors tensors() {
    return Tensors{view(q.data(), 512), view(k.data(), 512),
                   view(v.data(), 512), view(o.data(), 512),
                   TensorRef(lse.data(), DType::f32, {1, 2, 8})};
  }
  /// Launches `t`, expecting an error naming `argument`; o and lse keep
  /// their sentinels.
  void expectRejected(const Tensors &t, const std::string &argument,
                      const std::string &text) {
    try {
      kernel.launch(t);
      ADD_FAILURE() << "expected an error naming " << argument;
    } catch (const Error &e) {
      EXPECT_EQ(e.argument(), argument) << e.what();
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos)
          << e.what();
    }
    for (float x : o)
      ASSERT_EQ(x, -7.0f);
    for (float x : lse)
      ASSERT_EQ(x, -7.0f);
  }
};

TEST(Runtime, StridesThatOverflowAreRejected) {
  Strided l;
  l.kernel.launch(l.tensors()); // the layout itself is fine
  l.o.assign(l.o.size(), -7.0f);
  l.lse.assign(l.lse.size(), -7.0f);
  // o's head 1 at 2^62 elements = 2^64 bytes: wrapped onto head 0.
  Tensors t = l.tensors();
  t.o = Strided::view(l.o.data(), int64_t(1) << 62);
  l.expectRejected(t, "o", "does not fit in 64 bits");
  // 2^62 + 2^38 elements: 512 values about 1 TiB past o.
  t.o = Strided::view(l.o.data(), (int64_t(1) << 62) + (int64_t(1) << 38));
  l.expectRejected(t, "o", "does not fit in 64 bits");
  // k's head 1 wrapped around to address 0x10000.
  t = l.tensors();
  uint64_t wrapped =
      (uint64_t(0x10000) - reinterpret_cast<uintptr_t>(l.k.data())) / 4;
  t.k = Strided::view(l.k.data(), static_cast<int64_t>(wrapped));
  l.expectRejected(t, "k", "k: ");
  // Element counts that do not fit in int64.
  t = l.tensors();
  t.q.shape = {INT32_MAX, INT32_MAX, INT32_MAX, 64};
  t.q.strides.clear();
  l.expectRejected(t, "q", "more elements than fit in 64 bits");
}

TEST(Runtime, AStrideReachingAnOutputBlamesItsView) {
  // k with a head stride of 2^40 elements spans 4 TiB and so covers o and
  // lse wherever they are above it: the error names k (it named o or lse
  // before, depending on where the heap put the buffers). One allocation
  // holds them all so that the overlap is certain.
  Strided l;
  std::vector<float> pool(8 * 1024, 0.25f);
  Tensors t = l.tensors();
  t.k = Strided::view(pool.data(), int64_t(1) << 40);
  t.o = Strided::view(pool.data() + 2048, 512);
  t.lse = TensorRef(pool.data() + 4096, DType::f32, {1, 2, 8});
  try {
    l.kernel.launch(t);
    ADD_FAILURE() << "expected an error naming k";
  } catch (const Error &e) {
    EXPECT_EQ(e.argument(), "k") << e.what();
    EXPECT_NE(std::string(e.what()).find("reach into o"), std::string::npos)
        << e.what();
  }
  // The same k with o in a buffer of its own: whichever output k's span
  // reaches, the error names k.
  t.o = Strided::view(l.o.data(), 512);
  t.lse = TensorRef(pool.data() + 4096, DType::f32, {1, 2, 8});
  try {
    l.kernel.launch(t);
    ADD_FAILURE() << "expected an error naming k";
  } catch (const Error &e) {
    EXPECT_EQ(e.argument(), "k") << e.what();
  }
  // An output that truly overlaps an input is still the output's error.
  t = l.tensors();
  t.o.data = l.k.data();
  l.expectRejected(t, "o", "overlaps k or v");
}

TEST(Runtime, AParamPassedTwiceIsAnError) {
  Launch l;
  expectRejected(l, [&](Tensors &, Params &p) { p.push_back({"window", 5}); },
                 "window", "passed twice");
  expectRejected(l,
                 [&](Tensors &, Params &p) {
                   p.push_back({"bias", TensorRef(l.bias.data(), DType::f32,
                                                  {4})});
                 },
                 "bias", "passed twice");
}

TEST(Runtime, KVCacheOfEmptyInputs) {
  // Empty K/V may come with null pointers (memcpy of null was UB, found by
  // UBSan in KVCache::build).
  KernelInfo info;
  info.headDim = info.valueHeadDim = 16;
  for (int64_t page : {0, 4}) {
    info.pageSize = page;
    TensorRef k(nullptr, DType::f32, {1, 2, 0, 16});
    KVCache cache = KVCache::build(info, k, k);
    Tensors t;
    cache.bind(t);
    EXPECT_EQ(t.k.shape[1], 2);
  }
  // Sizes whose products do not fit are errors naming the tensor.
  TensorRef huge(nullptr, DType::f32, {INT32_MAX, INT32_MAX, INT32_MAX, 16});
  info.pageSize = 0;
  try {
    KVCache::build(info, huge, huge);
    ADD_FAILURE() << "expected an error";
  } catch (const Error &e) {
    EXPECT_EQ(e.argument(), "k") << e.what();
  }
}

/// A version-1 .npy header for f32 data of `shape`, followed by `data`.
void writeNpyHeaderOnly(const std::string &path, const std::string &shape,
                        const std::string &data = "") {
  std::string header =
      "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  header += std::string(63 - (10 + header.size()) % 64, ' ') + "\n";
  std::FILE *f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  std::fwrite("\x93NUMPY\x01\x00", 1, 8, f);
  unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xff),
                          static_cast<unsigned char>(header.size() >> 8)};
  std::fwrite(len, 1, 2, f);
  std::fwrite(header.data(), 1, header.size(), f);
  std::fwrite(data.data(), 1, data.size(), f);
  std::fclose(f);
}

TEST(Runtime, NpyRoundTrip) {
  NpyArray a;
  a.dtype = DType::i32;
  a.shape = {2, 3};
  a.bytes.resize(24);
  for (int i = 0; i < 6; ++i)
    reinterpret_cast<int32_t *>(a.bytes.data())[i] = i * 7 - 5;
  std::string path = ::testing::TempDir() + "/roundtrip.npy";
  writeNpy(path, a, "x");
  NpyArray b = readNpy(path, "x");
  EXPECT_EQ(b.dtype, DType::i32);
  EXPECT_EQ(b.shape, a.shape);
  EXPECT_EQ(b.bytes, a.bytes);
  EXPECT_THROW(readNpy(::testing::TempDir() + "/missing.npy", "x"), Error);
  // A header whose dimensions multiply past 64 bits (2^40 x 2^40 wrapped
  // to 0 bytes: an "empty" array claiming that shape).
  std::string huge = ::testing::TempDir() + "/huge.npy";
  writeNpyHeaderOnly(huge, "(1099511627776, 1099511627776)");
  try {
    readNpy(huge, "x");
    ADD_FAILURE() << "expected an error";
  } catch (const Error &e) {
    EXPECT_EQ(e.argument(), "x");
    EXPECT_NE(std::string(e.what()).find("too large"), std::string::npos)
        << e.what();
  }
}

// An empty shape whose other dimensions overflow 64 bits is refused, not
// read as an array whose numel() throws (found by fuzz_npy).
TEST(Runtime, NpyEmptyShapeWithOverflowingDimensions) {
  std::string path = ::testing::TempDir() + "/empty-huge.npy";
  writeNpyHeaderOnly(path, "(0, 1099511627776, 1099511627776)");
  try {
    NpyArray a = readNpy(path, "v");
    ADD_FAILURE() << "read an array of " << a.shape.size() << " dimensions";
  } catch (const Error &e) {
    EXPECT_EQ(e.argument(), "v");
    EXPECT_NE(std::string(e.what()).find("too large"), std::string::npos)
        << e.what();
  }
}

// A header claiming 1 TiB (within the size limit) in a file of a few
// hundred bytes: refused as truncated before anything is allocated
// (found by fuzz_npy; the reader used to allocate the claim first).
TEST(Runtime, NpyClaimingMoreDataThanTheFileHolds) {
  std::string path = ::testing::TempDir() + "/claims-1tib.npy";
  writeNpyHeaderOnly(path, "(274877906944,)", "0123456789abcdef");
  try {
    readNpy(path, "k");
    ADD_FAILURE() << "expected an error";
  } catch (const Error &e) {
    EXPECT_EQ(e.argument(), "k");
    EXPECT_NE(std::string(e.what()).find("truncated: expected 1099511627776 "
                                         "bytes of data, found 16"),
              std::string::npos)
        << e.what();
  }
}

/// attnc's exit status: 0 ok, 1 user error.
int runAttnc(const std::string &args) {
  std::string cmd = std::string(ATTNC_PATH) + " " + args + " >/dev/null 2>&1";
  int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(Runtime, AttncExitCodes) {
  std::string dir = ::testing::TempDir() + "/attnc_exit";
  std::filesystem::create_directories(dir);
  std::string good = dir + "/good.attn", bad = dir + "/bad.attn";
  std::FILE *f = std::fopen(good.c_str(), "w");
  std::fputs("variant c { mask(b, h, q, kv) = kv <= q; }\n", f);
  std::fclose(f);
  f = std::fopen(bad.c_str(), "w");
  std::fputs("variant c { mask(b, h, q, kv) = kv <= ; }\n", f);
  std::fclose(f);
  EXPECT_EQ(runAttnc("check " + good), 0);
  EXPECT_EQ(runAttnc("check " + bad), 1);
  EXPECT_EQ(runAttnc("check " + dir + "/missing.attn"), 1);
  EXPECT_EQ(runAttnc("emit " + good + " --stage=tiled"), 0);
  EXPECT_EQ(runAttnc("emit " + good + " --stage=nope"), 1);
  EXPECT_EQ(runAttnc("bogus " + good), 1);
  EXPECT_EQ(runAttnc("run " + good + " --q a.npy --k a.npy --v a.npy -o " +
                     dir + "/o.npy"),
            1);
  EXPECT_FALSE(std::filesystem::exists(dir + "/o.npy"));
}

} // namespace
