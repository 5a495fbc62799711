//===- GpuCases.h - language features every GPU backend compiles ---------===//
#ifndef ATTN_TEST_UNIT_GPUCASES_H
#define ATTN_TEST_UNIT_GPUCASES_H

#include "test/numerics/Catalog.h"

#include "lib/Driver/Compiler.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace attn::testing {

/// For each (chip, head dim), `check(source, options, what)` on the
/// catalog case's variant.
inline void forEachGpuTarget(
    const CatalogCase &c, std::vector<std::pair<const char *, int64_t>> targets,
    const std::function<void(const std::string &, Options,
                             const std::string &)> &check) {
  Problem p = catalogProblem(c, ATTN_SOURCE_ROOT);
  driver::Source parsed(p.source, p.filename);
  const fe::Variant *v = p.options.variant.empty()
                             ? &parsed.program.variants.front()
                             : parsed.program.find(p.options.variant);
  ASSERT_TRUE(v);
  for (auto [chip, d] : targets) {
    Options o;
    o.target = chip;
    o.headDim = d;
    o.variant = v->name;
    o.lse = v->hasRowSum();
    check(p.source, o, c.name + " " + chip + " D=" + std::to_string(d));
  }
}

/// examples/select.attn's `moba` over paged and quantized caches, one
/// (chip, K/V dtype, page size) per case, at D = 128 with lse.
inline void forEachSelectServingCase(
    std::vector<std::tuple<const char *, const char *, int64_t>> cases,
    const std::function<void(const std::string &, Options,
                             const std::string &)> &check) {
  std::string source =
      readText(std::string(ATTN_SOURCE_ROOT) + "/examples/select.attn");
  for (auto [chip, kv, page] : cases) {
    Options o;
    o.target = chip;
    o.headDim = 128;
    o.variant = "moba";
    o.kvDtype = kv;
    o.paged = page;
    o.lse = true;
    check(source, o,
          std::string("moba ") + chip + " " + kv + " page " +
              std::to_string(page));
  }
}

/// A small variant exercising one language feature, with the head dims,
/// input dtype and lse it is compiled with.
struct GpuFeatureCase {
  const char *name, *source;
  int64_t d, dv;
  const char *dtype;
  bool lse;
};

inline const std::vector<GpuFeatureCase> &gpuFeatureCases() {
  static const std::vector<GpuFeatureCase> cases = {
      {"plain", "variant p {}", 64, 64, "bf16", true},
      {"f16", "variant p { mask(b, h, q, kv) = kv <= q; }", 128, 128, "f16",
       true},
      {"dv_differs", "variant p { mask(b, h, q, kv) = kv <= q; }", 64, 128,
       "bf16", true},
      {"dv_smaller", "variant p {}", 128, 32, "bf16", false},
      {"d16", "variant p {}", 16, 16, "bf16", true},
      {"sink", "variant s { param sl: f32 = 1.5; sink(h) = sl * float(h); "
               "mask(b, h, q, kv) = kv <= q; }",
       64, 64, "bf16", true},
      {"sigmoid", "variant n { normalize = sigmoid; mask(b, h, q, kv) = kv "
                  "<= q; }",
       128, 128, "bf16", false},
      {"relu2", "variant n { normalize = relu2; }", 64, 64, "bf16", false},
      {"softplus", "variant n { normalize = softplus; }", 128, 128, "bf16",
       true},
      {"captures", "variant c { tensor a: i32[B, Skv]; tensor w: f16[Hq]; "
                   "tensor t: f32[32, Hq]; score(s, b, h, q, kv) = s + "
                   "float(w[h]) + t[min(q - kv, 31), h]; mask(b, h, q, kv) = "
                   "a[b, kv] == a[b, min(q, Skv - 1)]; }",
       64, 64, "bf16", true},
      {"floordiv", "variant f { param n: i32 = 7; mask(b, h, q, kv) = (q / n) "
                   "== (kv / n) || (kv % n) == 0; }",
       128, 128, "bf16", true},
      {"scale_expr", "variant s { scale = 1.0 / log(float(Skv) + 2.0); "
                     "score(s, b, h, q, kv) = 30.0 * tanh(s / 30.0); }",
       64, 64, "bf16", true},
      {"out_f32", "variant o { out_dtype = f32; mask(b, h, q, kv) = kv <= q; "
                  "}",
       64, 64, "bf16", true},
      {"builtins", "variant x { score(s, b, h, q, kv) = clamp(s, -5.0, 5.0) "
                   "+ sigmoid(s) * exp2(-abs(s)) + rsqrt(1.0 + s * s) + "
                   "floor(s) + sign(s); }",
       64, 64, "bf16", true},
  };
  return cases;
}

} // namespace attn::testing

#endif // ATTN_TEST_UNIT_GPUCASES_H
