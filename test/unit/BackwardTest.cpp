//===- BackwardTest.cpp - attn::Kernel::backward --------------------------===//
//
// Two halves:
//  - the runtime's side of the backward, on a stand-in kernel (a C++
//    function in place of compiled code): argument validation (every error
//    names its argument, nothing is written on failure), the packed
//    arguments, and the deterministic scheme of docs/runtime.md "Backward"
//    (fixed groups of work items, partial copies summed in group order), bit
//    for bit across thread counts;
//  - compiled CPU backward kernels against the float64 referenceBackward
//    (test/reference/ReferenceBackward.h) for a set of catalog-like variants,
//    in f32 and with bf16 inputs, plus determinism across runs and thread
//    counts.
//
// Bounds (docs/runtime.md "Backward"): every gradient element g against the
// reference r of the same tensor: |g - r| <= tol * max(1, max |r|), tol =
// 2e-4 for f32 inputs; for bf16 inputs 3e-2 for dq, dk, dv (rounded to
// bf16, 2^-8 relative) and 1e-1 for param and capture gradients: those sum
// every entry's contribution, with heavy cancellation (under softmax the
// entries of a row sum to 0), and the backward's row term
// Delta = rowsum(do * o) reads the forward's bf16 o, whose rounding (2^-9
// relative per row) does not cancel: an ALiBi slope's gradient (entries
// weighted by q - kv) was off by 6.3% of its largest element (B=2 Hq=4
// Sq=37 Skv=53 D=16, and the decode row), dq/dk/dv by 0.33%.
//
//===----------------------------------------------------------------------===//
#include "attn/jit.h"
#include "attn/runtime.h"
#include "attn/runtime_c.h"
#include "lib/Driver/Bundle.h"
#include "lib/Driver/Compiler.h"
#include "runtime/support/Manifest.h"
#include "lib/Frontend/Eval.h"
#include "test/reference/ReferenceBackward.h"
#include "test/numerics/Catalog.h"
#include "test/support/BackwardSim.h"
#include "test/support/Harness.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace attn;

namespace {

//===----------------------------------------------------------------------===//
// A stand-in kernel: the runtime's side alone
//===----------------------------------------------------------------------===//

// The stand-in's variant: softmax (so lse), params w: f32 and n: i32, captured
// tensors bias: f32[Hq] and idx: i32[4]. Its packed arguments, in slots:
// q, k, v, o (4 x 11), lse (9), w, n (2), bias (5), idx (5), do, dq, dk, dv
// (4 x 11), dw (5), dbias (5), phase, begin, end.
constexpr int kSlotW = 53, kSlotBias = 55, kSlotIdx = 60, kSlotDo = 65,
              kSlotDq = 76, kSlotDw = 109, kSlotDbias = 114, kSlotPhase = 119,
              kSlotBegin = 120, kSlotEnd = 121;

template <class T> T *alignedPtr(void **args, int slot) {
  return *reinterpret_cast<T **>(args[slot + 1]);
}

/// Each item i of phase p adds c(p, i) to dw and c(p, i) * (h + 1) to
/// dbias[h] for every h (a float sum whose value depends on its order),
/// and writes its index into dq's first element of the item (phase 1) so
/// the test sees the items ran.
float contribution(int32_t phase, int64_t item) {
  return 1.0f / float(3 + item) + (phase ? 0.37f : 0.11f);
}

void fakeBackward(void **args) {
  int32_t phase = *reinterpret_cast<int32_t *>(args[kSlotPhase]);
  int64_t begin = *reinterpret_cast<int64_t *>(args[kSlotBegin]);
  int64_t end = *reinterpret_cast<int64_t *>(args[kSlotEnd]);
  float w = *reinterpret_cast<float *>(args[kSlotW]);
  float *dw = alignedPtr<float>(args, kSlotDw);
  float *dbias = alignedPtr<float>(args, kSlotDbias);
  int64_t hq = *reinterpret_cast<int64_t *>(args[kSlotDbias + 3]);
  float *dq = alignedPtr<float>(args, kSlotDq);
  int64_t dqRow = *reinterpret_cast<int64_t *>(args[kSlotDq + 3 + 4 + 2]);
  (void)alignedPtr<float>(args, kSlotBias);
  (void)alignedPtr<int32_t>(args, kSlotIdx);
  (void)alignedPtr<float>(args, kSlotDo);
  for (int64_t i = begin; i < end; ++i) {
    float c = contribution(phase, i) * w;
    dw[0] += c;
    for (int64_t h = 0; h < hq; ++h)
      dbias[h] += c * float(h + 1);
    if (phase == 1)
      dq[i * dqRow] = float(i);
  }
}

void fakeForward(void **) {}

KernelInfo fakeInfo() {
  KernelInfo info;
  info.name = "fake";
  info.headDim = 8;
  info.valueHeadDim = 8;
  info.blockQ = 4;
  info.blockKV = 4;
  info.lse = true;
  info.backward = true;
  info.params = {{"w", DType::f32, 1.0}, {"n", DType::i32, 2.0}};
  CaptureInfo bias;
  bias.name = "bias";
  bias.dtype = DType::f32;
  bias.dimText = {"Hq"};
  bias.dimRpn = {"Hq"};
  CaptureInfo idx;
  idx.name = "idx";
  idx.dtype = DType::i32;
  idx.dimText = {"4"};
  idx.dimRpn = {"4"};
  info.captures = {bias, idx};
  return info;
}

Kernel fakeKernel(KernelInfo info = fakeInfo()) {
  return detail::makeCpuKernel(std::move(info), fakeForward, nullptr, nullptr,
                               nullptr, fakeBackward);
}

/// Buffers of one backward call for q [B, Hq, Sq, D], k/v [B, Hkv, Skv, D].
struct Call {
  int64_t B = 2, Hq = 4, Hkv = 2, Sq = 37, Skv = 53, D = 8;
  std::vector<float> q, k, v, o, lse, dO, dq, dk, dv, bias, dw, dbias;
  std::vector<int32_t> idx = {0, 1, 2, 3};
  Tensors t;
  Gradients g;
  Params params;
  TensorRef dOView;

  explicit Call(int64_t sq = 37, int64_t skv = 53) : Sq(sq), Skv(skv) {
    q.assign(B * Hq * Sq * D, 0.5f);
    o = dO = dq = q;
    k.assign(B * Hkv * Skv * D, 0.25f);
    v = dk = dv = k;
    lse.assign(B * Hq * Sq, 0.0f);
    bias.assign(Hq, 0.1f);
    dw.assign(1, -7.0f);
    dbias.assign(Hq, -7.0f);
    t.q = TensorRef(q.data(), DType::f32, {B, Hq, Sq, D});
    t.k = TensorRef(k.data(), DType::f32, {B, Hkv, Skv, D});
    t.v = TensorRef(v.data(), DType::f32, {B, Hkv, Skv, D});
    t.o = TensorRef(o.data(), DType::f32, {B, Hq, Sq, D});
    t.lse = TensorRef(lse.data(), DType::f32, {B, Hq, Sq});
    g.dq = TensorRef(dq.data(), DType::f32, {B, Hq, Sq, D});
    g.dk = TensorRef(dk.data(), DType::f32, {B, Hkv, Skv, D});
    g.dv = TensorRef(dv.data(), DType::f32, {B, Hkv, Skv, D});
    g.named = {{"w", TensorRef(dw.data(), DType::f32, {1})},
               {"bias", TensorRef(dbias.data(), DType::f32, {Hq})}};
    dOView = TensorRef(dO.data(), DType::f32, {B, Hq, Sq, D});
    params = {{"w", 1.5f},
              {"bias", TensorRef(bias.data(), DType::f32, {Hq})},
              {"idx", TensorRef(idx.data(), DType::i32, {4})}};
  }
  const TensorRef &dORef() const { return dOView; }
  int64_t items(int phase) const {
    return phase == 0 ? B * Hkv * ((Skv + 3) / 4) : B * Hq * ((Sq + 3) / 4);
  }
};

/// What the scheme computes for dw: per phase, 64 groups (or one per item)
/// of consecutive items, each summed in float from 0; the copies (one per
/// group, shared by the phases) summed in double in group order.
double expectedDw(const Call &c, float w) {
  int64_t n0 = c.items(0), n1 = c.items(1);
  int64_t copies = std::min<int64_t>(64, std::max(n0, n1));
  std::vector<float> part(copies, 0.0f);
  for (int phase = 0; phase < 2; ++phase) {
    int64_t n = c.items(phase), groups = std::min<int64_t>(64, n);
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t i = g * n / groups; i < (g + 1) * n / groups; ++i)
      {
        float c = contribution(phase, i) * w;
        part[g] += c;
      }
  }
  double sum = 0;
  for (float p : part)
    sum += p;
  return float(sum);
}

/// Expects `fn` to throw attn::Error naming `argument`.
template <class Fn>
void expectError(Fn fn, const std::string &argument,
                 const std::string &fragment = "") {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one naming '" << argument << "'";
  } catch (const Error &e) {
    EXPECT_EQ(e.argument(), argument) << e.what();
    if (!fragment.empty())
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos)
          << e.what();
  }
}

TEST(BackwardRuntime, GroupsAndPartialsAreDeterministic) {
  for (auto [sq, skv] : {std::pair{37, 53}, std::pair{3, 5},
                         std::pair{1000, 9}, std::pair{0, 7}}) {
    SCOPED_TRACE(std::to_string(sq) + " x " + std::to_string(skv));
    std::vector<float> first;
    for (unsigned threads : {1u, 2u, 5u, 0u}) {
      detail::setCpuThreadCount(threads);
      Call c(sq, skv);
      fakeKernel().backward(c.t, c.dORef(), c.g, c.params);
      EXPECT_EQ(c.dw[0], float(expectedDw(c, 1.5f)));
      // dbias[h] = the same scheme with c * (h + 1): check h = 0 bitwise
      // against dw (same sums), the others against the closed form.
      EXPECT_EQ(c.dbias[0], c.dw[0]);
      for (int64_t h = 1; h < c.Hq; ++h)
        EXPECT_NEAR(c.dbias[h], c.dw[0] * float(h + 1),
                    1e-5 * std::fabs(c.dw[0] * float(h + 1)));
      // Phase 1 ran every query tile (item i marks dq at row offset i).
      for (int64_t i = 0; i < c.items(1); ++i)
        EXPECT_EQ(c.dq[i * c.D], float(i));
      std::vector<float> got = c.dbias;
      got.push_back(c.dw[0]);
      if (first.empty())
        first = got;
      else
        EXPECT_EQ(std::memcmp(first.data(), got.data(),
                              got.size() * sizeof(float)),
                  0)
            << "thread count " << threads;
    }
  }
  detail::setCpuThreadCount(0);
}

TEST(BackwardRuntime, UnrequestedGradientsGoToScratch) {
  Call c;
  c.g.named = {{"bias", c.g.named[1].second}};
  fakeKernel().backward(c.t, c.dORef(), c.g, c.params);
  EXPECT_EQ(c.dw[0], -7.0f); // untouched: not asked for
  EXPECT_NE(c.dbias[0], -7.0f);
  // Strided gradient views are written through their strides.
  Call s;
  std::vector<float> wide(2 * s.Hq, -1.0f);
  s.g.named = {{"bias", TensorRef(wide.data(), DType::f32, {s.Hq}, {2})}};
  fakeKernel().backward(s.t, s.dORef(), s.g, s.params);
  for (int64_t h = 0; h < s.Hq; ++h) {
    EXPECT_EQ(wide[2 * h], c.dbias[h]);
    EXPECT_EQ(wide[2 * h + 1], -1.0f);
  }
}

TEST(BackwardRuntime, ValidationNamesTheArgumentAndWritesNothing) {
  Kernel k = fakeKernel();
  auto check = [&](auto mutate, const std::string &argument,
                   const std::string &fragment = "") {
    Call c;
    mutate(c);
    std::vector<float> dq = c.dq, dw = c.dw;
    expectError([&] { k.backward(c.t, c.dORef(), c.g, c.params); }, argument,
                fragment);
    EXPECT_EQ(c.dq, dq) << argument;
    EXPECT_EQ(c.dw, dw) << argument;
  };
  check([](Call &c) { c.t.lse.reset(); }, "lse", "lse");
  check([](Call &c) { c.g.named.push_back({"n", c.g.named[0].second}); },
        "n", "i32 param");
  check([](Call &c) {
    c.g.named.push_back({"idx", TensorRef(c.dw.data(), DType::f32, {4})});
  }, "idx", "i32 tensor");
  check([](Call &c) { c.g.named.push_back({"wz", c.g.named[0].second}); },
        "wz", "did you mean 'w'");
  check([](Call &c) { c.g.named.push_back(c.g.named[0]); }, "w", "twice");
  check([](Call &c) {
    c.g.named[1].second = TensorRef(c.dbias.data(), DType::f32, {c.Hq - 1});
  }, "bias", "expected shape [4]");
  check([](Call &c) {
    c.g.named[0].second = TensorRef(c.dw.data(), DType::f16, {1});
  }, "w", "f32");
  check([](Call &c) {
    c.g.dq = TensorRef(c.dq.data(), DType::f32, {c.B, c.Hq, c.Sq - 1, c.D});
  }, "dq");
  check([](Call &c) {
    c.g.dk = TensorRef(c.dk.data(), DType::bf16, {c.B, c.Hkv, c.Skv, c.D});
  }, "dk", "dtype");
  check([](Call &c) { c.g.dv.data = c.k.data(); }, "dv", "overlaps");
  check([](Call &c) { c.g.dk.data = c.dq.data(); }, "dk", "overlaps");
  check([](Call &c) { c.g.named[0].second.data = c.dbias.data(); }, "bias",
        "overlaps");
  check([](Call &c) { c.g.dv.strides = {0, 0, 0, 1}; }, "dv", "overlap");
  check([](Call &c) { c.dOView.shape[2] = c.Sq - 1; }, "do", "Sq");
  check([](Call &c) { c.dOView.dtype = DType::bf16; }, "do", "dtype");
  check([](Call &c) { c.params.pop_back(); }, "idx", "missing");
  check([](Call &c) { c.params.emplace_back("m", 1); }, "m");
  // A kernel without the backward, and a GPU kernel's.
  KernelInfo plain = fakeInfo();
  plain.backward = false;
  Call c;
  expectError([&] { fakeKernel(plain).backward(c.t, c.dORef(), c.g,
                                                c.params); },
              "", "without its backward");
  // Normalizers without a row sum take no lse.
  KernelInfo sig = fakeInfo();
  sig.normalize = "sigmoid";
  expectError([&] { fakeKernel(sig).backward(c.t, c.dORef(), c.g,
                                             c.params); },
              "lse", "no row sum");
}

//===----------------------------------------------------------------------===//
// Compiled kernels against the float64 reference
//===----------------------------------------------------------------------===//

struct Shape {
  int64_t B = 2, Hq = 4, Hkv = 2, Sq = 37, Skv = 53, D = 16, Dv = 16;
  int64_t blockQ = 16, blockKV = 16;
};

// Capture dims and bf16 conversions: test/support/BackwardSim.h.
using attn::testing::DimEnv;
using attn::testing::fromBf16;
using attn::testing::toBf16;

/// A host tensor in f32 or bf16 (bit patterns) with its values as doubles.
struct Host {
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  std::vector<float> f;
  std::vector<uint16_t> h;
  TensorRef ref() {
    return dtype == DType::f32 ? TensorRef(f.data(), dtype, shape)
                               : TensorRef(h.data(), dtype, shape);
  }
  double at(size_t i) const {
    return dtype == DType::f32 ? double(f[i]) : double(fromBf16(h[i]));
  }
  size_t size() const { return dtype == DType::f32 ? f.size() : h.size(); }
};

/// Random values in (-1, 1) rounded to `dtype`; `values` gets what the
/// kernel reads.
Host randomHost(DType dtype, std::vector<int64_t> shape, std::mt19937 &rng,
                std::vector<double> &values) {
  Host x;
  x.dtype = dtype;
  x.shape = shape;
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  values.resize(n);
  (dtype == DType::f32 ? x.f.resize(n) : x.h.resize(n));
  for (int64_t i = 0; i < n; ++i) {
    float v = uni(rng);
    if (dtype == DType::f32)
      x.f[i] = v;
    else
      x.h[i] = toBf16(v);
    values[i] = x.at(i);
  }
  return x;
}

Host zeros(DType dtype, std::vector<int64_t> shape) {
  Host x;
  x.dtype = dtype;
  x.shape = shape;
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  (dtype == DType::f32 ? x.f.assign(n, 0.0f) : x.h.assign(n, 0));
  return x;
}

struct Gradient {
  std::string name;
  Host got;
  std::vector<double> want;
};

/// Worst |got - want| / max(1, max |want|) over one tensor.
double scaledError(const Host &got, const std::vector<double> &want,
                   size_t *where = nullptr) {
  double scale = 1, err = 0;
  for (double w : want)
    scale = std::max(scale, std::fabs(w));
  for (size_t i = 0; i < want.size(); ++i) {
    double e = std::fabs(got.at(i) - want[i]);
    if (!(e <= err)) { // NaN counts as the worst
      err = std::isnan(e) ? INFINITY : e;
      if (where)
        *where = i;
    }
  }
  return err / scale;
}

/// One variant: compile with backward, run the forward and the backward,
/// compare with referenceBackward. Returns the gradients (for determinism
/// checks).
struct BackwardRun {
  std::vector<Gradient> grads;
  std::string report;
};

struct Problem {
  std::string source;
  std::string variant; // "" = the only one
  Shape shape;
  DType dtype = DType::f32;
  double qScale = 1; // > 1 makes logits large
  /// Captured tensors' values (by name) instead of random ones.
  std::vector<std::pair<std::string, std::vector<double>>> captures;
  /// Param values instead of the defaults.
  std::vector<std::pair<std::string, double>> params;
};

Jit &jit() {
  static Jit j;
  return j;
}

BackwardRun runBackward(const Problem &s, bool compare = true) {
  BackwardRun out;
  driver::Source src(s.source, "<backward-test>");
  const fe::Variant &v = s.variant.empty() ? src.program.variants.at(0)
                                            : *src.program.find(s.variant);
  const Shape &sh = s.shape;
  ref::RefProblem p;
  p.B = sh.B, p.Hq = sh.Hq, p.Hkv = sh.Hkv, p.Sq = sh.Sq, p.Skv = sh.Skv;
  p.D = sh.D, p.Dv = sh.Dv;
  std::mt19937 rng(1234);
  Host q = randomHost(s.dtype, {sh.B, sh.Hq, sh.Sq, sh.D}, rng, p.q);
  if (s.qScale != 1) {
    for (size_t i = 0; i < p.q.size(); ++i) {
      float x = float(p.q[i] * s.qScale);
      if (s.dtype == DType::f32)
        q.f[i] = x;
      else
        q.h[i] = toBf16(x);
      p.q[i] = q.at(i);
    }
  }
  Host k = randomHost(s.dtype, {sh.B, sh.Hkv, sh.Skv, sh.D}, rng, p.k);
  Host vv = randomHost(s.dtype, {sh.B, sh.Hkv, sh.Skv, sh.Dv}, rng, p.v);
  Params params;
  for (const fe::ParamDecl &d : v.params) {
    double value = d.defaultValue ? *d.defaultValue : 0.0;
    for (const auto &[n, x] : s.params)
      if (n == d.name)
        value = x;
    if (d.type == fe::Type::F32)
      value = double(float(value));
    p.params.push_back(value);
    if (d.type == fe::Type::I32)
      params.emplace_back(d.name, int64_t(value));
    else
      params.emplace_back(d.name, value);
  }
  std::vector<std::vector<float>> f32Captures;
  std::vector<std::vector<int32_t>> i32Captures;
  f32Captures.reserve(v.tensors.size());
  i32Captures.reserve(v.tensors.size());
  DimEnv env(v, p);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (const fe::TensorDecl &t : v.tensors) {
    ref::RefTensor c;
    int64_t n = 1;
    for (const fe::ExprPtr &d : t.dims) {
      c.shape.push_back(fe::evaluate(*d, v, env).i);
      n *= c.shape.back();
    }
    const std::vector<double> *given = nullptr;
    for (const auto &[name, values] : s.captures)
      if (name == t.name)
        given = &values;
    if (t.dtype == fe::DType::I32) {
      i32Captures.emplace_back(n);
      for (int64_t i = 0; i < n; ++i) {
        i32Captures.back()[i] = given ? int32_t((*given)[i]) : int32_t(i % 3);
        c.values.push_back(i32Captures.back()[i]);
      }
      params.emplace_back(t.name, TensorRef(i32Captures.back().data(),
                                            DType::i32, c.shape));
    } else {
      EXPECT_EQ(t.dtype, fe::DType::F32) << "the test makes f32 tensors";
      f32Captures.emplace_back(n);
      for (int64_t i = 0; i < n; ++i) {
        f32Captures.back()[i] = given ? float((*given)[i]) : uni(rng);
        c.values.push_back(f32Captures.back()[i]);
      }
      params.emplace_back(t.name, TensorRef(f32Captures.back().data(),
                                            DType::f32, c.shape));
    }
    p.captures.push_back(std::move(c));
  }
  std::vector<double> dout;
  Host dO = randomHost(s.dtype, {sh.B, sh.Hq, sh.Sq, sh.Dv}, rng, dout);

  Options o;
  o.headDim = sh.D;
  o.valueHeadDim = sh.Dv;
  o.dtype = dtypeName(s.dtype);
  o.blockQ = sh.blockQ;
  o.blockKV = sh.blockKV;
  o.lse = v.hasRowSum();
  o.backward = true;
  o.variant = s.variant;
  Kernel kernel = jit().compile(s.source, o, "<backward-test>");
  EXPECT_TRUE(kernel.info().backward);

  Host oHost = zeros(kernel.info().outDType, {sh.B, sh.Hq, sh.Sq, sh.Dv});
  std::vector<float> lse(sh.B * sh.Hq * sh.Sq);
  Tensors t;
  t.q = q.ref();
  t.k = k.ref();
  t.v = vv.ref();
  t.o = oHost.ref();
  if (o.lse)
    t.lse = TensorRef(lse.data(), DType::f32, {sh.B, sh.Hq, sh.Sq});
  kernel.launch(t, params);

  Gradients g;
  out.grads = {};
  out.grads.push_back({"q", zeros(s.dtype, q.shape), {}});
  out.grads.push_back({"k", zeros(s.dtype, k.shape), {}});
  out.grads.push_back({"v", zeros(s.dtype, vv.shape), {}});
  for (const fe::ParamDecl &d : v.params)
    if (d.type == fe::Type::F32)
      out.grads.push_back({d.name, zeros(DType::f32, {1}), {}});
  for (size_t i = 0; i < v.tensors.size(); ++i)
    if (v.tensors[i].dtype == fe::DType::F32)
      out.grads.push_back(
          {v.tensors[i].name, zeros(DType::f32, p.captures[i].shape), {}});
  g.dq = out.grads[0].got.ref();
  g.dk = out.grads[1].got.ref();
  g.dv = out.grads[2].got.ref();
  for (size_t i = 3; i < out.grads.size(); ++i)
    g.named.emplace_back(out.grads[i].name, out.grads[i].got.ref());
  kernel.backward(t, dO.ref(), g, params);
  if (!compare)
    return out;

  ref::RefGradients want = ref::referenceBackward(v, p, dout);
  out.grads[0].want = want.dq;
  out.grads[1].want = want.dk;
  out.grads[2].want = want.dv;
  for (size_t i = 3; i < out.grads.size(); ++i) {
    for (size_t j = 0; j < v.params.size(); ++j)
      if (v.params[j].name == out.grads[i].name)
        out.grads[i].want = {want.dparams[j]};
    for (size_t j = 0; j < v.tensors.size(); ++j)
      if (v.tensors[j].name == out.grads[i].name)
        out.grads[i].want = want.dcaptures[j].values;
  }
  char line[256];
  for (size_t i = 0; i < out.grads.size(); ++i) {
    const Gradient &gr = out.grads[i];
    double tol = s.dtype == DType::f32 ? 2e-4 : i < 3 ? 3e-2 : 1e-1;
    EXPECT_EQ(gr.got.size(), gr.want.size()) << "d" << gr.name;
    if (gr.want.empty() || gr.got.size() != gr.want.size())
      continue;
    size_t where = 0;
    double err = scaledError(gr.got, gr.want, &where);
    double scale = 0;
    for (double w : gr.want)
      scale = std::max(scale, std::fabs(w));
    std::snprintf(line, sizeof line,
                  "  d%-10s max|ref| %.3e  err/max(1,max|ref|) %.3e  (worst "
                  "at %zu: got %.6g, ref %.6g)\n",
                  gr.name.c_str(), scale, err, where, gr.got.at(where),
                  gr.want[where]);
    out.report += line;
    int64_t nonFinite = 0, firstNonFinite = -1;
    for (size_t j = 0; j < gr.got.size(); ++j)
      if (!std::isfinite(gr.got.at(j)) && std::isfinite(gr.want[j]) &&
          nonFinite++ == 0)
        firstNonFinite = int64_t(j);
    EXPECT_EQ(nonFinite, 0) << "d" << gr.name << ": " << nonFinite
                            << " non-finite elements, the first at "
                            << firstNonFinite << " (shape "
                            << ::testing::PrintToString(gr.got.shape)
                            << ")";
    EXPECT_LE(err, tol) << "d" << gr.name << " at element " << where
                        << ": got " << gr.got.at(where) << ", reference "
                        << gr.want[where];
  }
  std::printf("%s", out.report.c_str());
  return out;
}

struct Case {
  const char *name;
  const char *source;
  Shape shape = {};
};

const char *kAlibiSlopes =
    "variant alibi_slopes {\n"
    "  tensor slopes: f32[Hq];\n"
    "  param bias: f32 = 0.25;\n"
    "  score(s, b, h, q, kv) = s - slopes[h] * float(q - kv) + bias;\n"
    "  mask(b, h, q, kv) = kv <= q;\n"
    "}";

std::vector<Case> cases() {
  Shape gqa;
  gqa.Hq = 6;
  gqa.Hkv = 2;
  Shape mqa;
  mqa.Hkv = 1;
  Shape dv;
  dv.Dv = 8;
  Shape even;
  even.Sq = 64;
  even.Skv = 64;
  Shape noKeys;
  noKeys.Skv = 0;
  Shape oneRow;
  oneRow.Sq = 1;
  oneRow.Hq = 4;
  oneRow.Hkv = 1;
  Shape wide; // the default 64 x 64 tiles: one ragged tile each way
  wide.blockQ = 0;
  wide.blockKV = 0;
  return {
      {"dense", "variant dense {}"},
      {"dense_even_tiles", "variant dense {}", even},
      {"dense_auto_tiles", "variant dense {}", wide},
      {"no_keys", "variant dense {}", noKeys},
      {"decode_row", "variant decode {\n"
                     "  tensor slopes: f32[Hq];\n"
                     "  score(s, b, h, q, kv) = s - slopes[h] * "
                     "float(q + Skv - Sq - kv);\n"
                     "  mask(b, h, q, kv) = kv <= q + (Skv - Sq);\n}",
       oneRow},
      {"causal", "variant causal {\n"
                 "  mask(b, h, q, kv) = kv <= q + (Skv - Sq);\n}"},
      {"sliding_window", "variant sliding {\n"
                         "  param window: i32 = 9;\n"
                         "  mask(b, h, q, kv) = kv <= q && q - kv < window;\n"
                         "}"},
      {"alibi_capture_and_param", kAlibiSlopes},
      {"alibi_catalog", "variant alibi {\n"
                        "  let slope = exp2(-8.0 * float(h + 1) / float(Hq));\n"
                        "  score(s, b, h, q, kv) = s - slope * float(q - kv);\n"
                        "  mask(b, h, q, kv) = kv <= q;\n}"},
      {"softcap", "variant softcap {\n"
                  "  param cap: f32 = 1.5;\n"
                  "  score(s, b, h, q, kv) = cap * tanh(s / cap);\n"
                  "  mask(b, h, q, kv) = kv <= q;\n}"},
      {"bias_table", "variant t5 {\n"
                     "  tensor rel: f32[32, Hq];\n"
                     "  let n = max(q - kv, 0);\n"
                     "  score(s, b, h, q, kv) = s + rel[min(n, 31), h];\n"
                     "  mask(b, h, q, kv) = kv <= q;\n}"},
      {"sinks", "variant sinks {\n"
                "  tensor sink_logit: f32[Hq];\n"
                "  param sb: f32 = 0.3;\n"
                "  sink(h) = sink_logit[h] + sb;\n"
                "  mask(b, h, q, kv) = kv <= q;\n}"},
      {"scale_param", "variant scaled {\n"
                      "  param n_train: f32 = 4096.0;\n"
                      "  scale = sqrt(log(float(Skv)) / log(n_train) / "
                      "float(D));\n}"},
      {"sigmoid", "variant sig {\n  normalize = sigmoid;\n"
                  "  score(s, b, h, q, kv) = s - log(float(Skv));\n}"},
      {"softplus", "variant sp {\n  normalize = softplus;\n"
                   "  score(s, b, h, q, kv) = log(float(q + 2)) * s;\n"
                   "  mask(b, h, q, kv) = kv <= q;\n}"},
      {"relu", "variant r {\n  normalize = relu;\n"
               "  score(s, b, h, q, kv) = s / float(q + 1);\n"
               "  mask(b, h, q, kv) = kv <= q;\n}"},
      {"relu2", "variant r2 {\n  normalize = relu2;\n"
                "  score(s, b, h, q, kv) = s / float(Skv);\n}"},
      {"laplace", "variant lap {\n  normalize = laplace;\n"
                  "  score(s, b, h, q, kv) = s / float(q + 1);\n"
                  "  mask(b, h, q, kv) = kv <= q;\n}"},
      {"gqa", "variant causal {\n  mask(b, h, q, kv) = kv <= q;\n}", gqa},
      {"mqa_with_capture", kAlibiSlopes, mqa},
      {"value_head_dim", "variant causal {\n  mask(b, h, q, kv) = kv <= q;\n}",
       dv},
      {"fully_masked_rows",
       "variant holes {\n"
       "  tensor sink_logit: f32[Hq];\n"
       "  sink(h) = sink_logit[h];\n"
       "  mask(b, h, q, kv) = kv <= q && q != 3 && q / 16 != 1;\n}"},
      {"fully_masked_rows_softmax",
       "variant holes {\n"
       "  mask(b, h, q, kv) = kv <= q && q != 3 && q / 16 != 1;\n}"},
      {"fully_masked_rows_sigmoid",
       "variant holes {\n  normalize = sigmoid;\n"
       "  mask(b, h, q, kv) = kv <= q && q != 3;\n}"},
  };
}

class BackwardNumerics : public ::testing::TestWithParam<Case> {};

TEST_P(BackwardNumerics, F32MatchesReference) {
  Problem s;
  s.source = GetParam().source;
  s.shape = GetParam().shape;
  runBackward(s);
}

TEST_P(BackwardNumerics, Bf16MatchesReference) {
  Problem s;
  s.source = GetParam().source;
  s.shape = GetParam().shape;
  s.dtype = DType::bf16;
  runBackward(s);
}

INSTANTIATE_TEST_SUITE_P(
    Variants, BackwardNumerics, ::testing::ValuesIn(cases()),
    [](const ::testing::TestParamInfo<Case> &info) {
      return std::string(info.param.name);
    });

std::vector<std::vector<uint8_t>> bits(const BackwardRun &r) {
  std::vector<std::vector<uint8_t>> out;
  for (const Gradient &g : r.grads) {
    const uint8_t *p = g.got.dtype == DType::f32
                           ? reinterpret_cast<const uint8_t *>(g.got.f.data())
                           : reinterpret_cast<const uint8_t *>(g.got.h.data());
    size_t n = g.got.size() * dtypeSize(g.got.dtype);
    out.emplace_back(p, p + n);
  }
  return out;
}

TEST(BackwardDeterminism, BitIdenticalAcrossRunsAndThreadCounts) {
  for (const char *source :
       {kAlibiSlopes, "variant causal {\n  mask(b, h, q, kv) = kv <= q;\n}"}) {
    SCOPED_TRACE(source);
    Problem s;
    s.source = source;
    s.shape.Sq = 150;
    s.shape.Skv = 170;
    detail::setCpuThreadCount(4);
    auto first = bits(runBackward(s, false));
    EXPECT_EQ(bits(runBackward(s, false)), first) << "a second run";
    for (unsigned threads : {1u, 3u, 8u}) {
      detail::setCpuThreadCount(threads);
      EXPECT_EQ(bits(runBackward(s, false)), first) << threads << " threads";
    }
  }
  detail::setCpuThreadCount(0);
}

TEST(BackwardCompiled, ErrorsNameTheArgument) {
  // Every target builds backward kernels (the GPU ones are checked on the
  // simulators: sim_backward_tests, sim_amd_backward_tests).
  // Forward-only features: at compile(), though CPU code is built later.
  Options fwdOnly;
  fwdOnly.headDim = 16;
  fwdOnly.backward = true;
  try {
    jit().compile("variant kvi {\n  tensor idx: i32[B, Hkv, 8];\n"
                  "  kv_index = idx;\n}",
                  fwdOnly);
    ADD_FAILURE() << "kv_index with backward compiled";
  } catch (const CompileError &e) {
    EXPECT_NE(std::string(e.what()).find("kv_index is forward-only"),
              std::string::npos)
        << e.what();
  }
  fwdOnly.kvDtype = "int8";
  try {
    jit().compile("variant dense {}", fwdOnly);
    ADD_FAILURE() << "quantized K/V with backward compiled";
  } catch (const CompileError &e) {
    EXPECT_NE(std::string(e.what()).find("quantized K/V is forward-only"),
              std::string::npos)
        << e.what();
  }
  // A kernel compiled without its backward.
  Options plain;
  plain.headDim = 16;
  Kernel k = jit().compile("variant dense {}", plain);
  EXPECT_FALSE(k.info().backward);
  std::vector<float> x(16, 0.0f), y(16, 0.0f), lse(1, 0.0f);
  Tensors t;
  t.q = TensorRef(x.data(), DType::f32, {1, 1, 1, 16});
  t.k = t.v = t.o = t.q;
  Gradients g{TensorRef(y.data(), DType::f32, {1, 1, 1, 16}), {}, {}};
  expectError([&] { k.backward(t, t.o, g); }, "", "without its backward");
}

//===----------------------------------------------------------------------===//
// Bundles, the JIT's disk cache and the C ABI
//===----------------------------------------------------------------------===//

const char *kBundleSource = R"(
variant biased {
  param w: f32 = 0.5;
  param n: i32 = 4;
  tensor bias: f32[Hq];
  score(s, b, h, q, kv) = s * w + bias[h];
  mask(b, h, q, kv) = kv <= q;
}
)";

/// Fixed inputs of one forward and backward: B=1, Hq=2, Hkv=1, Sq=Skv=19,
/// D=Dv=16.
struct Fixed {
  int64_t B = 1, H = 2, Hkv = 1, S = 19, D = 16;
  std::vector<float> q, k, v, o, lse, dO, dq, dk, dv, bias, dw, dbias;
  Fixed() {
    q.resize(B * H * S * D);
    k.resize(B * Hkv * S * D);
    v = k;
    for (size_t i = 0; i < q.size(); ++i)
      q[i] = float(std::sin(0.37 * double(i)));
    for (size_t i = 0; i < k.size(); ++i) {
      k[i] = float(std::cos(0.11 * double(i)));
      v[i] = float(std::sin(0.05 * double(i) + 2));
    }
    o = dq = dO = q;
    for (size_t i = 0; i < dO.size(); ++i)
      dO[i] = float(std::cos(0.23 * double(i) + 1));
    dk = dv = k;
    lse.assign(B * H * S, 0.0f);
    bias = {0.25f, -0.5f};
    dw = {0.0f};
    dbias = {0.0f, 0.0f};
  }
  std::vector<int64_t> qShape() const { return {B, H, S, D}; }
  std::vector<int64_t> kShape() const { return {B, Hkv, S, D}; }
  void run(const Kernel &kernel) {
    Tensors t;
    t.q = TensorRef(q.data(), DType::f32, qShape());
    t.k = TensorRef(k.data(), DType::f32, kShape());
    t.v = TensorRef(v.data(), DType::f32, kShape());
    t.o = TensorRef(o.data(), DType::f32, qShape());
    t.lse = TensorRef(lse.data(), DType::f32, {B, H, S});
    Params params = {{"bias", TensorRef(bias.data(), DType::f32, {H})}};
    kernel.launch(t, params);
    Gradients g{TensorRef(dq.data(), DType::f32, qShape()),
                TensorRef(dk.data(), DType::f32, kShape()),
                TensorRef(dv.data(), DType::f32, kShape()),
                {{"w", TensorRef(dw.data(), DType::f32, {1})},
                 {"bias", TensorRef(dbias.data(), DType::f32, {H})}}};
    kernel.backward(t, TensorRef(dO.data(), DType::f32, qShape()), g,
                    params);
  }
};

std::string freshDir(const std::string &name) {
  namespace fs = std::filesystem;
  fs::path dir = fs::path(::testing::TempDir()) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

Options bundleOptions() {
  Options o;
  o.headDim = 16;
  o.lse = true;
  o.backward = true;
  return o;
}

TEST(BackwardBundle, BundleJitDiskCacheAndCAbiAgree) {
  std::string dir = freshDir("backward-bundle");
  // The JIT (compiled, then from its disk cache in a new Jit).
  Fixed viaJit;
  {
    Jit jit(dir + "/cache");
    viaJit.run(jit.compile(kBundleSource, bundleOptions()));
  }
  Fixed viaDisk;
  {
    Jit jit(dir + "/cache");
    viaDisk.run(jit.compile(kBundleSource, bundleOptions()));
    EXPECT_EQ(jit.stats().compiles, 0u);
    EXPECT_GE(jit.stats().diskHits, 1u);
  }
  EXPECT_EQ(viaDisk.dq, viaJit.dq);
  EXPECT_EQ(viaDisk.dbias, viaJit.dbias);
  EXPECT_NE(viaJit.dw[0], 0.0f);
  // A bundle.
  driver::writeBundle(driver::Source(kBundleSource, "biased.attn"),
                      bundleOptions(), dir + "/biased");
  Module m = Module::load(dir + "/biased.attnpkg");
  Kernel fromBundle = m.kernel("biased");
  EXPECT_TRUE(fromBundle.info().backward);
  Fixed viaBundle;
  viaBundle.run(fromBundle);
  for (auto [got, want] :
       {std::pair{&viaBundle.dq, &viaJit.dq}, {&viaBundle.dk, &viaJit.dk},
        {&viaBundle.dv, &viaJit.dv}, {&viaBundle.dw, &viaJit.dw},
        {&viaBundle.dbias, &viaJit.dbias}})
    for (size_t i = 0; i < got->size(); ++i)
      EXPECT_NEAR((*got)[i], (*want)[i], 1e-5 * (1 + std::fabs((*want)[i])));

  // The C ABI on the bundle's kernel.
  attn_module *module = nullptr;
  ASSERT_EQ(attn_module_load((dir + "/biased.attnpkg").c_str(), &module), 0)
      << attn_last_error();
  attn_kernel *kernel = nullptr;
  ASSERT_EQ(attn_module_kernel(module, "biased", &kernel), 0);
  Fixed c;
  int64_t qs[4] = {c.B, c.H, c.S, c.D}, ks[4] = {c.B, c.Hkv, c.S, c.D},
          ls[3] = {c.B, c.H, c.S}, hs[1] = {c.H}, one[1] = {1};
  attn_tensor q{c.q.data(), ATTN_F32, 4, qs, nullptr};
  attn_tensor k{c.k.data(), ATTN_F32, 4, ks, nullptr};
  attn_tensor v{c.v.data(), ATTN_F32, 4, ks, nullptr};
  attn_tensor o{c.o.data(), ATTN_F32, 4, qs, nullptr};
  attn_tensor lse{c.lse.data(), ATTN_F32, 3, ls, nullptr};
  attn_tensor dO{c.dO.data(), ATTN_F32, 4, qs, nullptr};
  attn_tensor dq{c.dq.data(), ATTN_F32, 4, qs, nullptr};
  attn_tensor dk{c.dk.data(), ATTN_F32, 4, ks, nullptr};
  attn_tensor dv{c.dv.data(), ATTN_F32, 4, ks, nullptr};
  attn_arg args[1] = {};
  args[0].name = "bias";
  args[0].kind = ATTN_ARG_TENSOR;
  args[0].tensor = attn_tensor{c.bias.data(), ATTN_F32, 1, hs, nullptr};
  ASSERT_EQ(attn_kernel_launch(kernel, &q, &k, &v, &o, &lse, args, 1,
                               nullptr),
            0)
      << attn_last_error();
  attn_grad grads[2] = {
      {"w", attn_tensor{c.dw.data(), ATTN_F32, 1, one, nullptr}},
      {"bias", attn_tensor{c.dbias.data(), ATTN_F32, 1, hs, nullptr}}};
  // Errors name the argument and write nothing.
  attn_grad bad[1] = {{"n", grads[0].tensor}};
  EXPECT_EQ(attn_kernel_backward(kernel, &q, &k, &v, &o, &lse, &dO, &dq, &dk,
                                 &dv, bad, 1, args, 1, nullptr),
            1);
  EXPECT_STREQ(attn_last_error_argument(), "n");
  EXPECT_EQ(attn_kernel_backward(kernel, &q, &k, &v, &o, nullptr, &dO, &dq,
                                 &dk, &dv, grads, 2, args, 1, nullptr),
            1);
  EXPECT_STREQ(attn_last_error_argument(), "lse");
  EXPECT_EQ(attn_kernel_backward_host(kernel, &q, &k, &v, &o, &lse, nullptr,
                                      &dq, &dk, &dv, grads, 2, args, 1),
            1);
  EXPECT_STREQ(attn_last_error_argument(), "do");
  EXPECT_EQ(c.dq, Fixed().dq);
  EXPECT_EQ(c.dw[0], 0.0f);
  ASSERT_EQ(attn_kernel_backward(kernel, &q, &k, &v, &o, &lse, &dO, &dq, &dk,
                                 &dv, grads, 2, args, 1, nullptr),
            0)
      << attn_last_error();
  EXPECT_EQ(c.dq, viaBundle.dq);
  EXPECT_EQ(c.dk, viaBundle.dk);
  EXPECT_EQ(c.dw, viaBundle.dw);
  EXPECT_EQ(c.dbias, viaBundle.dbias);
  attn_kernel_free(kernel);
  attn_module_free(module);
}

TEST(BackwardBundle, HeaderDeclaresTheTypedBackward) {
  driver::Source source(kBundleSource, "biased.attn");
  std::string h = driver::launcherHeader(
      {driver::planKernel(source, bundleOptions())}, "b", "b.attnpkg",
      "biased.attn");
  EXPECT_NE(h.find("static constexpr bool has_backward = true;"),
            std::string::npos)
      << h;
  EXPECT_NE(h.find("kernel.backward(tensors, dO, grads, args, stream);"),
            std::string::npos)
      << h;
  Options plain = bundleOptions();
  plain.backward = false;
  h = driver::launcherHeader({driver::planKernel(source, plain)}, "b",
                             "b.attnpkg", "biased.attn");
  EXPECT_EQ(h.find("kernel.backward"), std::string::npos) << h;
}

TEST(BackwardBundle, ManifestsWithoutTheFieldHaveNoBackward) {
  KernelInfo info = fakeInfo();
  std::string json = manifest::writeKernelInfo(info);
  EXPECT_NE(json.find("\"backward\": true"), std::string::npos) << json;
  EXPECT_TRUE(manifest::readKernelInfo(json, "x").backward);
  info.backward = false;
  json = manifest::writeKernelInfo(info);
  EXPECT_EQ(json.find("backward"), std::string::npos) << json;
  EXPECT_FALSE(manifest::readKernelInfo(json, "x").backward);
}

//===----------------------------------------------------------------------===//
// The catalog (examples/*.attn) with the numerics tests' data
//===----------------------------------------------------------------------===//

class BackwardCatalog
    : public ::testing::TestWithParam<attn::testing::CatalogCase> {};

void runCatalogCase(const attn::testing::CatalogCase &cc, DType dtype) {
  attn::testing::Problem c =
      attn::testing::catalogProblem(cc, ATTN_SOURCE_ROOT, /*headDim=*/32);
  Problem s;
  s.dtype = dtype;
  s.source = c.source;
  s.variant = c.options.variant;
  s.shape.B = c.B, s.shape.Hq = c.Hq, s.shape.Hkv = c.Hkv;
  s.shape.Sq = c.Sq, s.shape.Skv = c.Skv;
  s.shape.D = s.shape.Dv = 32;
  s.shape.blockQ = s.shape.blockKV = 32;
  s.qScale = c.qScale;
  s.params = c.params;
  for (const auto &[name, t] : c.captures)
    s.captures.emplace_back(name, t.values);
  // Forward-only features (kv_index, select) are refused by name.
  try {
    driver::Source src(s.source, "<catalog>");
    Options o;
    o.headDim = 32;
    o.variant = s.variant;
    o.backward = true;
    driver::planKernel(src, o);
  } catch (const CompileError &e) {
    ASSERT_NE(std::string(e.what()).find("is forward-only"),
              std::string::npos)
        << e.what();
    GTEST_SKIP() << "forward-only: " << e.what();
  }
  runBackward(s);
}

TEST_P(BackwardCatalog, F32MatchesReference) {
  runCatalogCase(GetParam(), DType::f32);
}

TEST_P(BackwardCatalog, Bf16MatchesReference) {
  runCatalogCase(GetParam(), DType::bf16);
}

INSTANTIATE_TEST_SUITE_P(
    Examples, BackwardCatalog, ::testing::ValuesIn(attn::testing::catalogCases()),
    [](const ::testing::TestParamInfo<attn::testing::CatalogCase> &info) {
      return info.param.name;
    });

} // namespace
