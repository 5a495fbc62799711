//===- BackwardSim.h - backward kernels on a simulator vs the reference ---===//
//
// What the NVIDIA and AMD simulator tests of the backward share: bf16
// helpers, sizes for captured tensors' dimensions, one run of a variant's
// forward and backward (Kernel::backwardHost) on the GPU simulator the
// caller opted into, compared with referenceBackward, and the catalog's
// problems (test/numerics/Catalog.h) as such runs.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TEST_SUPPORT_BACKWARDSIM_H
#define ATTN_TEST_SUPPORT_BACKWARDSIM_H

#include "attn/jit.h"
#include "attn/runtime.h"
#include "lib/Driver/Compiler.h"
#include "lib/Frontend/Eval.h"
#include "test/numerics/Catalog.h"
#include "test/reference/Reference.h"
#include "test/reference/ReferenceBackward.h"
#include "test/support/Harness.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

namespace attn::testing {

inline uint16_t toBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return uint16_t((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}
inline float fromBf16(uint16_t b) {
  uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

struct Shape {
  int64_t B = 1, Hq = 2, Hkv = 2, Sq = 37, Skv = 53, D = 32, Dv = 32;
};

struct Case {
  std::string name;
  std::string source;
  Shape shape = {};
  /// Which of the source's variants ("" = the first).
  std::string variant = {};
  /// Param values by name; the others take their defaults.
  std::vector<std::pair<std::string, double>> params = {};
  /// Captured tensors by name, values representable in the tensor's dtype
  /// (the catalog's document ids, prefix lengths...). The others are made
  /// up: floating ones uniform in (-1, 1), i32 ones in [0, intRange).
  std::map<std::string, ref::RefTensor> captures = {};
  int32_t intRange = 3;
  /// q's values are scaled by this before rounding to bf16: > 1 spreads
  /// scores (and select's pooled scores) apart.
  double qScale = 1.0;
};

/// gtest names a Case by its name (not its bytes) in test listings.
inline void PrintTo(const Case &c, std::ostream *os) { *os << c.name; }

/// bf16 values in (-scale, scale); `values` gets what the kernel reads.
inline std::vector<uint16_t> randomBf16(int64_t n, std::mt19937 &rng,
                                        std::vector<double> &values,
                                        double scale = 1.0) {
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<uint16_t> x(n);
  values.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    x[i] = toBf16(scale == 1.0 ? uni(rng) : float(uni(rng) * scale));
    values[i] = fromBf16(x[i]);
  }
  return x;
}

/// Capture dims for the reference: sizes and params.
class DimEnv : public fe::EvalEnv {
public:
  DimEnv(const fe::Variant &v, const ref::RefProblem &p) : v(v), p(p) {}
  fe::Scalar index(fe::IndexVar) override { return fe::Scalar::ofInt(0); }
  fe::Scalar size(fe::SizeVar sv) override {
    int64_t values[] = {p.B, p.Hq, p.Hkv, p.Sq, p.Skv, p.D, p.Dv};
    return fe::Scalar::ofInt(int32_t(values[int(sv)]));
  }
  fe::Scalar param(int i) override {
    return v.params[i].type == fe::Type::I32
               ? fe::Scalar::ofInt(int32_t(p.params[i]))
               : fe::Scalar::ofFloat(p.params[i]);
  }
  fe::Scalar tensorElement(int, const std::vector<int32_t> &) override {
    return fe::Scalar::ofInt(0);
  }
  fe::Scalar let(int) override { return fe::Scalar::ofInt(0); }

private:
  const fe::Variant &v;
  const ref::RefProblem &p;
};


/// One Jit for every run of a test binary (kernels are cached in it).
inline Jit &simJit() {
  static Jit j;
  return j;
}

struct SimRun {
  std::vector<uint16_t> dq, dk, dv;
  double err[3] = {0, 0, 0};
  /// Gradients of the f32 params and captured tensors, by name.
  std::vector<std::pair<std::string, std::vector<float>>> named;
};

inline DType runtimeDType(fe::DType t) {
  switch (t) {
  case fe::DType::F16:
    return DType::f16;
  case fe::DType::BF16:
    return DType::bf16;
  case fe::DType::I32:
    return DType::i32;
  default:
    return DType::f32;
  }
}

/// A captured tensor's bytes in its dtype; `values` become what the kernel
/// reads.
inline std::vector<uint8_t> storeAs(DType t, std::vector<double> &values) {
  std::vector<uint8_t> bytes(values.size() * dtypeSize(t));
  for (size_t i = 0; i < values.size(); ++i) {
    double x = values[i] = roundTo(values[i], t);
    if (t == DType::i32) {
      int32_t n = int32_t(x);
      std::memcpy(&bytes[4 * i], &n, 4);
    } else if (t == DType::f32) {
      float f = float(x);
      std::memcpy(&bytes[4 * i], &f, 4);
    } else if (t == DType::bf16) {
      uint16_t b = toBf16(float(x));
      std::memcpy(&bytes[2 * i], &b, 2);
    } else {
      _Float16 h = _Float16(float(x));
      std::memcpy(&bytes[2 * i], &h, 2);
    }
  }
  return bytes;
}

/// Why `c`'s variant has no backward on `target` (the planner's "... is
/// forward-only" error, the one BackwardTest's catalog test skips on), or
/// nothing when it has one. Any other compile error fails the test.
inline std::optional<std::string> forwardOnlyReason(const Case &c,
                                                    const std::string &target) {
  try {
    driver::Source src(c.source, "<backward-sim-test>");
    Options o;
    o.target = target;
    o.headDim = c.shape.D;
    o.valueHeadDim = c.shape.Dv;
    o.dtype = "bf16";
    o.variant = c.variant;
    o.backward = true;
    driver::planKernel(src, o);
  } catch (const CompileError &e) {
    std::string what = e.what();
    EXPECT_NE(what.find("is forward-only"), std::string::npos) << what;
    return what;
  }
  return std::nullopt;
}

/// Forward and backward of `c` on `target` in the simulator the caller
/// opted into (bf16 inputs, random data and `c`'s given params and
/// captures, every f32 param's and f32 captured tensor's gradient asked
/// for; other tensors and i32 params have none, as in the reference);
/// compares with the float64 reference when `compare`: |g - r| <= 3e-2
/// max(1, max |r|) per tensor for dq, dk, dv and 1e-1 for param and capture
/// gradients (BackwardTest's bf16 bounds).
inline SimRun runBackwardOnSimulator(const Case &c, const std::string &target,
                                     bool compare = true) {
  const char *label = "<backward-sim-test>";
  driver::Source src(c.source, label);
  const fe::Variant *found = c.variant.empty()
                                 ? &src.program.variants.at(0)
                                 : src.program.find(c.variant);
  EXPECT_NE(found, nullptr) << "no variant " << c.variant;
  if (!found)
    return {};
  const fe::Variant &v = *found;
  const Shape &sh = c.shape;
  ref::RefProblem p;
  p.B = sh.B, p.Hq = sh.Hq, p.Hkv = sh.Hkv, p.Sq = sh.Sq, p.Skv = sh.Skv;
  p.D = sh.D, p.Dv = sh.Dv;
  std::mt19937 rng(1234);
  auto q = randomBf16(sh.B * sh.Hq * sh.Sq * sh.D, rng, p.q, c.qScale);
  auto k = randomBf16(sh.B * sh.Hkv * sh.Skv * sh.D, rng, p.k);
  auto vv = randomBf16(sh.B * sh.Hkv * sh.Skv * sh.Dv, rng, p.v);
  Params params;
  for (const fe::ParamDecl &d : v.params) {
    double value = d.defaultValue ? *d.defaultValue : 0.0;
    for (const auto &[name, given] : c.params)
      if (name == d.name)
        value = given;
    if (d.type == fe::Type::F32)
      value = double(float(value));
    p.params.push_back(value);
    if (d.type == fe::Type::I32)
      params.emplace_back(d.name, int64_t(value));
    else
      params.emplace_back(d.name, value);
  }
  std::vector<std::vector<uint8_t>> captures;
  captures.reserve(v.tensors.size());
  DimEnv env(v, p);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::uniform_int_distribution<int32_t> ints(0, c.intRange - 1);
  for (const fe::TensorDecl &t : v.tensors) {
    ref::RefTensor rt;
    auto given = c.captures.find(t.name);
    if (given != c.captures.end()) {
      rt = given->second;
    } else {
      int64_t n = 1;
      for (const fe::ExprPtr &d : t.dims) {
        rt.shape.push_back(fe::evaluate(*d, v, env).i);
        n *= rt.shape.back();
      }
      for (int64_t i = 0; i < n; ++i)
        rt.values.push_back(t.dtype == fe::DType::I32 ? double(ints(rng))
                                                      : double(uni(rng)));
    }
    DType dtype = runtimeDType(t.dtype);
    captures.push_back(storeAs(dtype, rt.values));
    params.emplace_back(t.name,
                        TensorRef(captures.back().data(), dtype, rt.shape));
    p.captures.push_back(std::move(rt));
  }
  std::vector<double> dout;
  auto dO = randomBf16(sh.B * sh.Hq * sh.Sq * sh.Dv, rng, dout);

  Options o;
  o.target = target;
  o.headDim = sh.D;
  o.valueHeadDim = sh.Dv;
  o.dtype = "bf16";
  o.variant = c.variant;
  o.lse = v.hasRowSum();
  o.backward = true;
  Kernel kernel = simJit().compile(c.source, o, label);
  EXPECT_TRUE(kernel.info().backward);

  std::vector<uint16_t> out(sh.B * sh.Hq * sh.Sq * sh.Dv);
  std::vector<float> lse(sh.B * sh.Hq * sh.Sq);
  Tensors t;
  t.q = TensorRef(q.data(), DType::bf16, {sh.B, sh.Hq, sh.Sq, sh.D});
  t.k = TensorRef(k.data(), DType::bf16, {sh.B, sh.Hkv, sh.Skv, sh.D});
  t.v = TensorRef(vv.data(), DType::bf16, {sh.B, sh.Hkv, sh.Skv, sh.Dv});
  t.o = TensorRef(out.data(), DType::bf16, {sh.B, sh.Hq, sh.Sq, sh.Dv});
  if (o.lse)
    t.lse = TensorRef(lse.data(), DType::f32, {sh.B, sh.Hq, sh.Sq});
  kernel.launchHost(t, params);

  SimRun r;
  r.dq.assign(q.size(), 0xdead);
  r.dk.assign(k.size(), 0xdead);
  r.dv.assign(vv.size(), 0xdead);
  Gradients g;
  g.dq = TensorRef(r.dq.data(), DType::bf16, t.q.shape);
  g.dk = TensorRef(r.dk.data(), DType::bf16, t.k.shape);
  g.dv = TensorRef(r.dv.data(), DType::bf16, t.v.shape);
  // Every f32 param's and f32 captured tensor's gradient too.
  for (size_t i = 0; i < v.params.size(); ++i)
    if (v.params[i].type == fe::Type::F32)
      r.named.emplace_back(v.params[i].name, std::vector<float>(1, -7.0f));
  for (size_t i = 0; i < v.tensors.size(); ++i)
    if (v.tensors[i].dtype == fe::DType::F32)
      r.named.emplace_back(
          v.tensors[i].name,
          std::vector<float>(p.captures[i].values.size(), -7.0f));
  for (size_t i = 0; i < r.named.size(); ++i) {
    std::vector<int64_t> shape = {1};
    for (size_t j = 0; j < v.tensors.size(); ++j)
      if (v.tensors[j].name == r.named[i].first)
        shape = p.captures[j].shape;
    g.named.emplace_back(r.named[i].first,
                         TensorRef(r.named[i].second.data(), DType::f32, shape));
  }
  kernel.backwardHost(t, TensorRef(dO.data(), DType::bf16, t.o.shape), g, params);
  if (!compare)
    return r;

  std::string report = c.name + " " + target + ":";
  if (v.select) {
    // Skipping key blocks is what select adds to the backward: data where
    // the rule keeps every block would test none of it.
    driver::Source unselected(c.source, label);
    int64_t kept = 0, keptUnselected = 0;
    for (fe::Variant &other : unselected.program.variants)
      if (other.name == v.name) {
        other.select.reset();
        for (uint8_t m : ref::referenceMask(v, p))
          kept += m;
        for (uint8_t m : ref::referenceMask(other, p))
          keptUnselected += m;
      }
    EXPECT_LT(kept, keptUnselected)
        << c.name << ": select keeps every block of these data";
    report += " select keeps " + std::to_string(kept) + " of " +
              std::to_string(keptUnselected) + " entries;";
  }
  ref::RefGradients want = ref::referenceBackward(v, p, dout);
  const char *names[3] = {"dq", "dk", "dv"};
  const std::vector<uint16_t> *got[3] = {&r.dq, &r.dk, &r.dv};
  const std::vector<double> *ref[3] = {&want.dq, &want.dk, &want.dv};
  for (int i = 0; i < 3; ++i) {
    double scale = 1, err = 0;
    size_t where = 0;
    for (double w : *ref[i])
      scale = std::max(scale, std::fabs(w));
    EXPECT_EQ(got[i]->size(), ref[i]->size());
    if (got[i]->size() != ref[i]->size())
      continue;
    for (size_t j = 0; j < ref[i]->size(); ++j) {
      double e = std::fabs(double(fromBf16((*got[i])[j])) - (*ref[i])[j]);
      if (!(e <= err)) { // NaN counts as the worst
        err = std::isnan(e) ? INFINITY : e;
        where = j;
      }
    }
    r.err[i] = err / scale;
    char line[160];
    std::snprintf(line, sizeof line, " %s %.2e", names[i], r.err[i]);
    report += line;
    EXPECT_LE(r.err[i], 3e-2)
        << c.name << " on " << target << ": " << names[i] << " at element "
        << where << ": got " << fromBf16((*got[i])[where]) << ", reference "
        << (*ref[i])[where];
  }
  // Param and capture gradients: BackwardTest's bf16 bound, 1e-1.
  for (const auto &[name, got] : r.named) {
    const std::vector<double> *wantValues = nullptr;
    std::vector<double> one;
    for (size_t j = 0; j < v.params.size(); ++j)
      if (v.params[j].name == name) {
        one = {want.dparams[j]};
        wantValues = &one;
      }
    for (size_t j = 0; j < v.tensors.size(); ++j)
      if (v.tensors[j].name == name)
        wantValues = &want.dcaptures[j].values;
    EXPECT_NE(wantValues, nullptr) << name;
    if (!wantValues)
      continue;
    EXPECT_EQ(got.size(), wantValues->size());
    double scale = 1, err = 0;
    for (double w : *wantValues)
      scale = std::max(scale, std::fabs(w));
    for (size_t j = 0; j < wantValues->size() && j < got.size(); ++j) {
      double e = std::fabs(double(got[j]) - (*wantValues)[j]);
      err = std::isnan(e) ? INFINITY : std::max(err, e);
    }
    char line[160];
    std::snprintf(line, sizeof line, " d%s %.2e", name.c_str(), err / scale);
    report += line;
    EXPECT_LE(err / scale, 1e-1) << c.name << " on " << target << ": d" << name;
  }
  std::printf("%s\n", report.c_str());
  return r;
}

/// A catalog problem with BackwardTest's catalog data (catalogProblem at
/// D = 32, examples/ under `root`) as a Case: its shape, params, given
/// captures (document ids, prefix lengths, ancestor tables...), the range
/// of its made-up i32 captures and its q scale.
inline Case catalogSimCase(const CatalogCase &cc, const std::string &root) {
  Problem problem = catalogProblem(cc, root, /*headDim=*/32);
  Case c;
  c.name = cc.name;
  c.source = problem.source;
  c.variant = problem.options.variant;
  c.shape.B = problem.B, c.shape.Hq = problem.Hq, c.shape.Hkv = problem.Hkv;
  c.shape.Sq = problem.Sq, c.shape.Skv = problem.Skv;
  c.shape.D = c.shape.Dv = 32;
  c.params = problem.params;
  c.captures = problem.captures;
  c.intRange = problem.intRange;
  c.qScale = problem.qScale;
  // The runner's q and k are uniform, not the catalog's normal values:
  // pooled over 64 keys their scores are nearly even, and mass(0.9) keeps
  // every one of flex_prefill_mass's 4 key blocks (and still all 8 at 460
  // tokens). At 720 tokens (11 blocks and a tail of 16), as in
  // select_flex_prefill, it drops some; one head pair keeps the run short.
  if (cc.name == "flex_prefill_mass") {
    c.shape.Hq = c.shape.Hkv = 1;
    c.shape.Sq = c.shape.Skv = 720;
  }
  return c;
}

/// Where `cc` stands in catalogCases(), for spreading targets over them.
inline size_t catalogIndex(const CatalogCase &cc) {
  const std::vector<CatalogCase> &all = catalogCases();
  for (size_t i = 0; i < all.size(); ++i)
    if (all[i].name == cc.name)
      return i;
  return 0;
}

inline const char *kAlibiParam =
    "variant alibi_slopes {\n"
    "  tensor slopes: f32[Hq];\n"
    "  param bias: f32 = 0.25;\n"
    "  score(s, b, h, q, kv) = s - slopes[h] * float(q - kv) + bias;\n"
    "  mask(b, h, q, kv) = kv <= q;\n"
    "}";

// (A Case's shape must outlive the call: runOnSimulator reads it.)
/// The variants both vendors' backward tests run: every normalizer, masks
/// and tails (Sq = 70, Skv = 100), GQA, Dv != D, D = 64, sinks, params and
/// captured tensors read by the score and the scale, and select.
inline std::vector<Case> backwardSimCases() {
  Shape ragged;
  ragged.Sq = 70;
  ragged.Skv = 100;
  Shape gqa;
  gqa.Hq = 4;
  gqa.Hkv = 1;
  Shape dv;
  dv.Dv = 16;
  Shape wide;
  wide.D = 64;
  wide.Dv = 64;
  wide.Sq = 20;
  wide.Skv = 24;
  // select: several 64-token blocks with a tail (4 and 12 blocks), GQA.
  Shape selectGqa;
  selectGqa.Hq = 4;
  selectGqa.Sq = selectGqa.Skv = 200;
  Shape selectLong;
  selectLong.Hq = selectLong.Hkv = 1;
  selectLong.Sq = selectLong.Skv = 720;
  Shape selectRagged;
  selectRagged.Sq = 150;
  selectRagged.Skv = 190;
  selectRagged.Dv = 16;
  return {
      {"dense", "variant dense {}"},
      {"causal_ragged",
       "variant causal {\n  mask(b, h, q, kv) = kv <= q + (Skv - Sq);\n}",
       ragged},
      {"gqa", "variant causal {\n  mask(b, h, q, kv) = kv <= q;\n}", gqa},
      {"sliding_window", "variant sliding {\n"
                         "  param window: i32 = 9;\n"
                         "  mask(b, h, q, kv) = kv <= q && q - kv < window;\n"
                         "}"},
      {"softcap", "variant softcap {\n"
                  "  param cap: f32 = 1.5;\n"
                  "  score(s, b, h, q, kv) = cap * tanh(s / cap);\n"
                  "  mask(b, h, q, kv) = kv <= q;\n}"},
      {"alibi", "variant alibi {\n"
                "  tensor slopes: f32[Hq];\n"
                "  score(s, b, h, q, kv) = s - slopes[h] * float(q - kv);\n"
                "  mask(b, h, q, kv) = kv <= q;\n}"},
      {"sinks", "variant sinks {\n"
                "  tensor sink_logit: f32[Hq];\n"
                "  param sb: f32 = 0.3;\n"
                "  sink(h) = sink_logit[h] + sb;\n"
                "  mask(b, h, q, kv) = kv <= q;\n}"},
      {"alibi_capture_and_param", kAlibiParam},
      {"bias_table", "variant t5 {\n"
                     "  tensor rel: f32[32, Hq];\n"
                     "  let n = max(q - kv, 0);\n"
                     "  score(s, b, h, q, kv) = s + rel[min(n, 31), h];\n"
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
      {"relu2", "variant r2 {\n  normalize = relu2;\n"
                "  score(s, b, h, q, kv) = s / float(Skv);\n}"},
      {"laplace", "variant lap {\n  normalize = laplace;\n"
                  "  score(s, b, h, q, kv) = s / float(q + 1);\n"
                  "  mask(b, h, q, kv) = kv <= q;\n}"},
      {"value_head_dim",
       "variant causal {\n  mask(b, h, q, kv) = kv <= q;\n}", dv},
      {"head_dim_64", "variant causal {\n  mask(b, h, q, kv) = kv <= q;\n}",
       wide},
      {"fully_masked_rows",
       "variant holes {\n"
       "  mask(b, h, q, kv) = kv <= q && q != 3 && q / 16 != 1;\n}"},
      // examples/select.attn's three variants: the device pre-pass chooses
      // the blocks from the forward's inputs, and the backward skips the
      // rest. Lengths where each rule drops blocks: moba's k is 2 (the
      // example's 4 keeps every past block of 4), flex_prefill's 90% of a
      // near-uniform pooled softmax needs 12 blocks to drop one.
      {"select_moba_gqa",
       "variant moba {\n"
       "  param k: i32 = 2;\n"
       "  select(size = 64) = topk(k);\n"
       "  mask(b, h, q, kv) = kv <= q;\n}",
       selectGqa},
      {"select_flex_prefill",
       "variant flex_prefill {\n"
       "  select(size = 64) = mass(0.9);\n"
       "  mask(b, h, q, kv) = kv <= q;\n}",
       selectLong},
      {"select_block_theta",
       "variant block_theta {\n"
       "  param theta: f32 = 0.05;\n"
       "  select(size = 64) = above(theta);\n}",
       selectGqa},
      // Blocks of 48 cut across the kernels' 64-row, 32- and 16-column
      // tiles: tiles partly kept are PARTIAL, checked per entry.
      {"select_blocks_of_48",
       "variant moba48 {\n"
       "  param k: i32 = 2;\n"
       "  select(size = 48) = topk(k);\n"
       "  mask(b, h, q, kv) = kv <= q + (Skv - Sq);\n}",
       selectRagged},
  };
}

} // namespace attn::testing

#endif // ATTN_TEST_SUPPORT_BACKWARDSIM_H
