//===- BackwardSimTest.cpp - NVIDIA backward kernels on the PTX simulator -===//
//
// Variants compiled with backward for sm_80 and sm_90a (bf16 inputs), the
// forward and then Kernel::backward launched on host tensors through
// attnrt's CUDA launcher on the functional simulator (libattnsim_cuda.so),
// and dq, dk, dv and every f32 param's and captured tensor's gradient
// compared with the float64 referenceBackward under BackwardTest's bf16
// bounds: |g - r| <= tol max(1, max |r|) per tensor, tol = 3e-2 for dq, dk,
// dv and 1e-1 for param and capture gradients.
// Shapes are small and ragged (Sq = 70, Skv = 100 in the causal case: tails
// in both directions, several CTAs and key tiles). Also: two runs give the
// same bits (param and capture gradients included), and ptxas -v reports
// no spills for the backward kernels.
//
//===----------------------------------------------------------------------===//
#include "attn/jit.h"
#include "attn/runtime.h"
#include "lib/Driver/Compiler.h"
#include "lib/Frontend/Eval.h"
#include "lib/Target/NVPTX/NVPTXTarget.h"
#include "test/numerics/Catalog.h"
#include "test/reference/ReferenceBackward.h"
#include "test/unit/GpuCases.h"
#include "test/support/Harness.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <regex>
#include <string>
#include <vector>

using namespace attn;

namespace {

uint16_t toBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return uint16_t((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}
float fromBf16(uint16_t b) {
  uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

struct Shape {
  int64_t B = 1, Hq = 2, Hkv = 2, Sq = 37, Skv = 53, D = 32, Dv = 32;
};

struct Case {
  const char *name;
  const char *source;
  Shape shape = {};
};

/// bf16 values in (-1, 1); `values` gets what the kernel reads.
std::vector<uint16_t> randomBf16(int64_t n, std::mt19937 &rng,
                                 std::vector<double> &values) {
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<uint16_t> x(n);
  values.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    x[i] = toBf16(uni(rng));
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

Jit &jit() {
  static Jit j;
  return j;
}

struct SimRun {
  std::vector<uint16_t> dq, dk, dv;
  /// Gradients of the f32 params and captured tensors, by name.
  std::vector<std::pair<std::string, std::vector<float>>> named;
  double err[3] = {0, 0, 0};
};

/// Forward and backward of `c` on `target` in the simulator; compares with
/// the reference when `compare`.
SimRun runOnSimulator(const Case &c, const std::string &target,
                   bool compare = true) {
  attn::testing::useTestGpuSimulator();
  driver::Source src(c.source, "<backward-sim-test>");
  const fe::Variant &v = src.program.variants.at(0);
  const Shape &sh = c.shape;
  ref::RefProblem p;
  p.B = sh.B, p.Hq = sh.Hq, p.Hkv = sh.Hkv, p.Sq = sh.Sq, p.Skv = sh.Skv;
  p.D = sh.D, p.Dv = sh.Dv;
  std::mt19937 rng(1234);
  auto q = randomBf16(sh.B * sh.Hq * sh.Sq * sh.D, rng, p.q);
  auto k = randomBf16(sh.B * sh.Hkv * sh.Skv * sh.D, rng, p.k);
  auto vv = randomBf16(sh.B * sh.Hkv * sh.Skv * sh.Dv, rng, p.v);
  Params params;
  for (const fe::ParamDecl &d : v.params) {
    double value = d.defaultValue ? *d.defaultValue : 0.0;
    if (d.type == fe::Type::F32)
      value = double(float(value));
    p.params.push_back(value);
    if (d.type == fe::Type::I32)
      params.emplace_back(d.name, int64_t(value));
    else
      params.emplace_back(d.name, value);
  }
  std::vector<std::vector<float>> captures;
  captures.reserve(v.tensors.size());
  DimEnv env(v, p);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (const fe::TensorDecl &t : v.tensors) {
    EXPECT_EQ(t.dtype, fe::DType::F32) << "the test makes f32 tensors";
    ref::RefTensor rt;
    int64_t n = 1;
    for (const fe::ExprPtr &d : t.dims) {
      rt.shape.push_back(fe::evaluate(*d, v, env).i);
      n *= rt.shape.back();
    }
    captures.emplace_back(n);
    for (int64_t i = 0; i < n; ++i) {
      captures.back()[i] = uni(rng);
      rt.values.push_back(captures.back()[i]);
    }
    params.emplace_back(t.name,
                        TensorRef(captures.back().data(), DType::f32, rt.shape));
    p.captures.push_back(std::move(rt));
  }
  std::vector<double> dout;
  auto dO = randomBf16(sh.B * sh.Hq * sh.Sq * sh.Dv, rng, dout);

  Options o;
  o.target = target;
  o.headDim = sh.D;
  o.valueHeadDim = sh.Dv;
  o.dtype = "bf16";
  o.lse = v.hasRowSum();
  o.backward = true;
  Kernel kernel = jit().compile(c.source, o, "<backward-sim-test>");
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
  // Every f32 param's and captured tensor's gradient too.
  for (size_t i = 0; i < v.params.size(); ++i)
    if (v.params[i].type == fe::Type::F32)
      r.named.emplace_back(v.params[i].name, std::vector<float>(1, -7.0f));
  for (size_t i = 0; i < v.tensors.size(); ++i)
    r.named.emplace_back(v.tensors[i].name,
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

  ref::RefGradients want = ref::referenceBackward(v, p, dout);
  const ref::RefGradients &wantGrads = want;
  auto want_dparam = [](const ref::RefGradients &w, size_t j) {
    return w.dparams[j];
  };
  const char *names[3] = {"dq", "dk", "dv"};
  const std::vector<uint16_t> *got[3] = {&r.dq, &r.dk, &r.dv};
  const std::vector<double> *ref[3] = {&want.dq, &want.dk, &want.dv};
  std::string report = std::string(c.name) + " " + target + ":";
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
    const std::vector<double> *want = nullptr;
    std::vector<double> one;
    for (size_t j = 0; j < v.params.size(); ++j)
      if (v.params[j].name == name) {
        one = {want_dparam(wantGrads, j)};
        want = &one;
      }
    for (size_t j = 0; j < v.tensors.size(); ++j)
      if (v.tensors[j].name == name)
        want = &wantGrads.dcaptures[j].values;
    EXPECT_NE(want, nullptr) << name;
    if (!want)
      continue;
    EXPECT_EQ(got.size(), want->size());
    double scale = 1, err = 0;
    for (double w : *want)
      scale = std::max(scale, std::fabs(w));
    for (size_t j = 0; j < want->size() && j < got.size(); ++j) {
      double e = std::fabs(double(got[j]) - (*want)[j]);
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

const char *kAlibiParam =
    "variant alibi_slopes {\n"
    "  tensor slopes: f32[Hq];\n"
    "  param bias: f32 = 0.25;\n"
    "  score(s, b, h, q, kv) = s - slopes[h] * float(q - kv) + bias;\n"
    "  mask(b, h, q, kv) = kv <= q;\n"
    "}";

// (A Case's shape must outlive the call: runOnSimulator reads it.)
std::vector<Case> cases() {
  Shape ragged;
  ragged.Sq = 70;
  ragged.Skv = 100;
  Shape gqa;
  gqa.Hq = 4;
  gqa.Hkv = 1;
  Shape dv;
  dv.Dv = 16;
  Shape wideValues;
  wideValues.Dv = 160;
  wideValues.Sq = 20;
  wideValues.Skv = 40;
  Shape wide;
  wide.D = 64;
  wide.Dv = 64;
  wide.Sq = 20;
  wide.Skv = 24;
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
      {"value_head_dim",
       "variant causal {\n  mask(b, h, q, kv) = kv <= q;\n}", dv},
      {"head_dim_64", "variant causal {\n  mask(b, h, q, kv) = kv <= q;\n}",
       wide},
      // Past a head dim of 128 the kernels are scalar (no tensor cores).
      {"scalar_wide_values",
       "variant sc {\n"
       "  tensor sink_logit: f32[Hq];\n"
       "  param cap: f32 = 1.5;\n"
       "  sink(h) = sink_logit[h];\n"
       "  score(s, b, h, q, kv) = cap * tanh(s / cap);\n"
       "  mask(b, h, q, kv) = kv <= q;\n}",
       wideValues},
      {"fully_masked_rows",
       "variant holes {\n"
       "  mask(b, h, q, kv) = kv <= q && q != 3 && q / 16 != 1;\n}"},
  };
}

class BackwardSim : public ::testing::TestWithParam<Case> {};

TEST_P(BackwardSim, Sm80MatchesReference) {
  runOnSimulator(GetParam(), "sm_80");
}

TEST_P(BackwardSim, Sm90aMatchesReference) {
  // sm_90a runs the same mma.sync backward after its own (wgmma) forward:
  // a subset keeps the suite short.
  std::string name = GetParam().name;
  for (const char *subset : {"dense", "causal_ragged", "gqa", "softcap",
                             "sinks", "softplus", "fully_masked_rows",
                             "head_dim_64", "alibi_capture_and_param"})
    if (name == subset) {
      runOnSimulator(GetParam(), "sm_90a");
      return;
    }
  GTEST_SKIP() << "covered on sm_80";
}

INSTANTIATE_TEST_SUITE_P(Variants, BackwardSim, ::testing::ValuesIn(cases()),
                         [](const auto &info) { return info.param.name; });

TEST(BackwardSimDeterminism, TwoRunsAreBitIdentical) {
  Shape ragged;
  ragged.Sq = 70;
  ragged.Skv = 100;
  Case c = {"alibi_param_ragged", kAlibiParam, ragged};
  SimRun a = runOnSimulator(c, "sm_80", /*compare=*/false);
  SimRun b = runOnSimulator(c, "sm_80", /*compare=*/false);
  EXPECT_EQ(a.dq, b.dq);
  EXPECT_EQ(a.dk, b.dk);
  EXPECT_EQ(a.dv, b.dv);
  ASSERT_EQ(a.named.size(), 2u);
  for (size_t i = 0; i < a.named.size(); ++i)
    EXPECT_EQ(std::memcmp(a.named[i].second.data(), b.named[i].second.data(),
                          4 * a.named[i].second.size()),
              0)
        << a.named[i].first;
}

/// ptxas -v on the emitted module: the backward kernels' registers and
/// spills.
TEST(BackwardSimPtxas, NoSpills) {
  if (!mlir::attn::nvptx::havePtxas())
    GTEST_SKIP() << "no ptxas (CUDA toolkit) on this machine";
  for (const char *chip : {"sm_80", "sm_90a"})
    for (int64_t d : {64, 128}) {
      Options o;
      o.target = chip;
      o.headDim = d;
      o.dtype = "bf16";
      o.lse = true;
      o.backward = true;
      driver::Source parsed(
          "variant c { param cap: f32 = 2.0; score(s, b, h, q, kv) = cap * "
          "tanh(s / cap); mask(b, h, q, kv) = kv <= q; }",
          "c.attn");
      driver::KernelPlan plan = driver::planKernel(parsed, o);
      driver::GpuObject g = driver::compileGpuObject(parsed, plan);
      const std::string &report = g.ptxasReport;
      for (const char *kernel : {"_bwd_kv", "_bwd_q"}) {
        std::regex props(std::string("Function properties for "
                                     "attn_entry_c") +
                         kernel +
                         "\\s*\\n\\s*(\\d+) bytes stack frame, (\\d+) bytes "
                         "spill stores, (\\d+) bytes spill loads[^\\n]*\\n"
                         "[^\\n]*Used (\\d+) registers");
        std::smatch m;
        ASSERT_TRUE(std::regex_search(report, m, props))
            << chip << " D=" << d << kernel << ":\n" << report;
        std::printf("%s D=%lld %s: %s registers, stack %s, spill stores %s, "
                    "spill loads %s\n",
                    chip, (long long)d, kernel, m[4].str().c_str(),
                    m[1].str().c_str(), m[2].str().c_str(),
                    m[3].str().c_str());
        EXPECT_EQ(m[2].str(), "0") << chip << kernel;
        EXPECT_EQ(m[3].str(), "0") << chip << kernel;
      }
    }
}

/// Every catalog variant with a backward at D = 64 and 128 on both chips:
/// the backward kernels never spill (tensor cores, or the scalar kernels
/// where those would). About 3 minutes: run with
/// --gtest_also_run_disabled_tests.
class BackwardSimCatalog
    : public ::testing::TestWithParam<attn::testing::CatalogCase> {};

TEST_P(BackwardSimCatalog, DISABLED_NoSpills) {
  if (!mlir::attn::nvptx::havePtxas())
    GTEST_SKIP() << "no ptxas (CUDA toolkit) on this machine";
  attn::testing::forEachGpuTarget(
      GetParam(), {{"sm_80", 64}, {"sm_80", 128}, {"sm_90a", 128}},
      [](const std::string &source, Options o, const std::string &what) {
        o.backward = true;
        driver::Source parsed(source, "catalog.attn");
        driver::KernelPlan plan;
        try {
          plan = driver::planKernel(parsed, o);
        } catch (const CompileError &) {
          return; // forward-only features
        }
        driver::GpuObject g = driver::compileGpuObject(parsed, plan);
        std::printf("%s: backward spills %lld, %s\n", what.c_str(),
                    (long long)g.backwardSpillBytes,
                    g.code.backwardKvThreads == 128 ? "tensor cores"
                                                    : "scalar");
        EXPECT_EQ(g.backwardSpillBytes, 0) << what;
      });
}

INSTANTIATE_TEST_SUITE_P(
    Examples, BackwardSimCatalog,
    ::testing::ValuesIn(attn::testing::catalogCases()),
    [](const auto &info) { return info.param.name; });

} // namespace
