//===- RandomDifferentialTest.cpp - random variants against the reference -===//
//
// docs/numerics.md "Random differential testing". Generated variants
// (VariantGenerator.h) run through the JIT on the CPU and on the simulated
// GPUs (sm_80, sm_90a on the PTX simulator, gfx942 on the CDNA one) and are
// compared with the float64 reference under the bounds of Bounds.h. A
// failing case is shrunk and reported as a minimal `.attn` file with a
// ready-to-run `attnc run` command line.
//
// Environment:
//   ATTN_RANDOM_SEED=N      another seed (CI uses kDefaultSeed)
//   ATTN_RANDOM_CASES=N     cases per target (all shards together)
//   ATTN_RANDOM_ONLY=I      run case I only (a reproducer's index)
//   ATTN_RANDOM_VERBOSE=1   print every case's source and error/bound
//   ATTN_RANDOM_SHRINK_RUNS=N  shrinker budget (default 200 runs, 300 s)
//
//===----------------------------------------------------------------------===//
#include "test/random/CaseRunner.h"

#include "lib/Driver/Compiler.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <tuple>

using namespace attn;
using namespace attn::testing::rdiff;

namespace {

constexpr uint64_t kDefaultSeed = 20240611;

/// Cases per target and CI run (all shards together), and shards. gfx90a
/// and gfx950 run only when ATTN_RANDOM_CASES asks for cases.
struct Budget {
  const char *target;
  int cases;
  int shards;
};
constexpr Budget kBudgets[] = {{"cpu", 400, 8},   {"sm_80", 32, 1},
                               {"sm_90a", 24, 1}, {"gfx942", 32, 1},
                               {"gfx90a", 0, 1},  {"gfx950", 0, 1}};

/// Cases of the CI seed left out of the CI set because they hit a known
/// compiler bug (see the comment at each): target, index.
struct KnownBug {
  const char *target;
  uint64_t index;
  const char *bug;
};
constexpr KnownBug kKnownBugs[] = {
    {"", 0, ""}, // (none yet)
};

uint64_t envU64(const char *name, uint64_t fallback) {
  const char *v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

uint64_t seed() { return envU64("ATTN_RANDOM_SEED", kDefaultSeed); }
bool verbose() { return envU64("ATTN_RANDOM_VERBOSE", 0) != 0; }

const char *knownBug(const std::string &target, uint64_t index) {
  if (seed() != kDefaultSeed)
    return nullptr;
  for (const KnownBug &k : kKnownBugs)
    if (target == k.target && index == k.index)
      return k.bug;
  return nullptr;
}

Jit &jit() {
  static Jit j;
  return j;
}

using Shard = std::tuple<std::string, int, int, int>; // target, shard, of, cases

class RandomDiff : public ::testing::TestWithParam<Shard> {};

TEST_P(RandomDiff, MatchesReference) {
  auto [target, shard, shards, defaultCases] = GetParam();
  if (target != "cpu")
    if (std::string why = useSimulators(); !why.empty())
      GTEST_SKIP() << why;
  uint64_t s = seed();
  uint64_t cases = envU64("ATTN_RANDOM_CASES", uint64_t(defaultCases));
  if (cases == 0)
    GTEST_SKIP() << target << ": no cases unless ATTN_RANDOM_CASES is set";
  const char *only = std::getenv("ATTN_RANDOM_ONLY");
  int shrinkRuns = int(envU64("ATTN_RANDOM_SHRINK_RUNS", 200));
  auto t0 = std::chrono::steady_clock::now();
  int ran = 0, failed = 0, unsupported = 0;
  double worst = 0;
  uint64_t worstIndex = 0;
  for (uint64_t i = 0; i < cases; ++i) {
    if (only && *only ? i != std::strtoull(only, nullptr, 10)
                      : int(i % uint64_t(shards)) != shard)
      continue;
    if (const char *bug = knownBug(target, i)) {
      std::printf("case %llu skipped (known bug: %s)\n",
                  (unsigned long long)i, bug);
      continue;
    }
    Case c = generateCase(s, i, target);
    auto c0 = std::chrono::steady_clock::now();
    RunResult r = runCase(c, jit());
    ++ran;
    if (verbose())
      std::printf("case %llu: %s, %.2fx of the bound, %.2f s\n%s",
                  (unsigned long long)i, describe(c).c_str(), r.worst,
                  std::chrono::duration<double>(
                      std::chrono::steady_clock::now() - c0)
                      .count(),
                  toSource(c.spec).c_str());
    if (!r.unsupported.empty()) {
      ++unsupported;
      std::printf("case %llu not run: %s\n", (unsigned long long)i,
                  r.unsupported.c_str());
    }
    if (r.worst > worst)
      worst = r.worst, worstIndex = i;
    if (!r.failure)
      continue;
    ++failed;
    Shrunk m = shrink(c, r.failure, jit(), shrinkRuns, 300);
    std::string dir = std::string(ATTN_RANDOM_REPRO_DIR) + "/" + target +
                      "-seed" + std::to_string(s) + "-case" +
                      std::to_string(i);
    ADD_FAILURE() << "random case " << i << " on " << target << " (seed " << s
                  << "): " << kindName(r.failure.kind) << "\n  "
                  << r.failure.message << "\n  original: " << describe(c)
                  << "\n  minimal (" << m.steps << " edits, " << m.runs
                  << " runs): " << kindName(m.failure.kind) << ": "
                  << m.failure.message << "\n"
                  << writeReproducer(m.minimal, m.failure, dir)
                  << "  rerun the original: ATTN_RANDOM_SEED=" << s
                  << " ATTN_RANDOM_ONLY=" << i << " ATTN_RANDOM_CASES="
                  << cases << " random_diff_tests --gtest_filter='*"
                  << (target == "cpu" ? "Cpu" : "Gpu") << "*'\n";
  }
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  std::printf("%s shard %d/%d: %d cases, %d failed, %d not run by the "
              "simulator, worst %.2fx of the bound (case %llu), %.1f s\n",
              target.c_str(), shard, shards, ran, failed, unsupported, worst,
              (unsigned long long)worstIndex, seconds);
}

std::vector<Shard> shards(bool gpu) {
  std::vector<Shard> out;
  for (const Budget &b : kBudgets)
    if ((std::string(b.target) != "cpu") == gpu)
      for (int s = 0; s < b.shards; ++s)
        out.push_back({b.target, s, b.shards, b.cases});
  return out;
}

std::string shardName(const ::testing::TestParamInfo<Shard> &info) {
  std::string t = std::get<0>(info.param);
  for (char &ch : t)
    if (ch == '_')
      ch = 'x';
  return t + "s" + std::to_string(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(Cpu, RandomDiff, ::testing::ValuesIn(shards(false)),
                         shardName);
INSTANTIATE_TEST_SUITE_P(Gpu, RandomDiff, ::testing::ValuesIn(shards(true)),
                         shardName);

//===----------------------------------------------------------------------===//
// The generator itself
//===----------------------------------------------------------------------===//

// Every generated source passes the front end (`attnc check`: parse, check,
// import and verify) without a warning, generation is deterministic, and
// the language's features all occur.
TEST(RandomGenerator, SourcesPassTheChecker) {
  const char *targets[] = {"cpu", "cpu", "sm_80", "gfx942"};
  int n = int(envU64("ATTN_RANDOM_GENERATOR_CASES", 3000));
  std::map<std::string, int> seen;
  int fallbacks = 0;
  for (int i = 0; i < n; ++i) {
    const char *target = targets[i % 4];
    Case c = generateCase(seed(), uint64_t(i), target);
    std::string source = toSource(c.spec);
    ASSERT_EQ(validate(c), "") << source;
    ASSERT_EQ(source, toSource(generateCase(seed(), uint64_t(i), target).spec))
        << "not deterministic";
    try {
      driver::Source parsed(source, "random.attn");
      EXPECT_EQ(parsed.warnings, "") << source;
      if (i % 4 == 0) // import and verify too, as attnc check does
        driver::checkAll(parsed);
    } catch (const std::exception &e) {
      ADD_FAILURE() << "case " << i << ": " << e.what() << "\n" << source;
      continue;
    }
    if (c.spec.order.size() == 1 && c.spec.mask && c.Sq == 33 && c.Skv == 65)
      ++fallbacks;
    // Features: builtins, operators, declarations, normalizers.
    static const char *const words[] = {
        "exp(", "exp2(", "log(", "log2(", "sqrt(", "rsqrt(", "tanh(",
        "sigmoid(", "softplus(", "abs(", "min(", "max(", "floor(", "ceil(",
        "sign(", "clamp(", "where(", "float(", "int(", " ? ", " % ", " / ",
        " && ", " || ", "!", " == ", " != ", " <= ", " >= ", "inf", "-inf",
        "param ", "const ", "tensor ", "let ", "scale = ", "score(",
        "mask(", "sink(", "select(", "topk(", "mass(", "above(",
        "kv_index", "out_dtype", "normalize = sigmoid", "normalize = relu;",
        "normalize = relu2", "normalize = softplus", "normalize = softmax",
        "hkv", ": i32[", ": f32[", ": f16[", "bf16[", "true", "false",
        "Hq", "Hkv", "Sq", "Skv", "D)", "Dv", "e-", "e+"};
    for (const char *w : words)
      if (source.find(w) != std::string::npos)
        ++seen[w];
    seen[std::string("target ") + target] += 1;
    if (c.Sq == 1)
      ++seen["decode"];
    if (c.Hq != c.Hkv)
      ++seen["gqa"];
    if (c.launches.size() > 1)
      ++seen["two launches"];
    if (c.paged)
      ++seen["paged"];
    if (c.splitKv != "auto")
      ++seen["split"];
    if (c.lse)
      ++seen["lse"];
  }
  EXPECT_LE(fallbacks, n / 100) << "too many generator retries";
  static const char *const must[] = {
      "exp(", "exp2(", "log(", "log2(", "sqrt(", "rsqrt(", "tanh(",
      "sigmoid(", "softplus(", "abs(", "min(", "max(", "floor(", "ceil(",
      "sign(", "clamp(", "where(", "float(", "int(", " ? ", " % ", " / ",
      " && ", " || ", "-inf", "param ", "const ", "tensor ", "let ",
      "scale = ", "score(", "mask(", "sink(", "topk(", "mass(", "above(",
      "kv_index", "out_dtype", "normalize = sigmoid", "normalize = relu;",
      "normalize = relu2", "normalize = softplus", "hkv", ": i32[", ": f16[",
      "bf16[", "decode", "gqa", "two launches", "paged", "split", "lse"};
  for (const char *w : must)
    EXPECT_GT(seen[w], 0) << "no generated source has '" << w << "'";
  if (verbose())
    for (const auto &[w, count] : seen)
      std::printf("%6d  %s\n", count, w.c_str());
}

// The shrinker's candidates that keep the invariants are valid sources too.
TEST(RandomGenerator, ShrinkCandidatesPassTheChecker) {
  int checked = 0;
  for (uint64_t i = 0; i < 40; ++i) {
    Case c = generateCase(seed(), i, i % 3 ? "cpu" : "sm_80");
    for (const Case &x : shrinkCandidates(c)) {
      if (!validate(x).empty())
        continue;
      std::string source = toSource(x.spec);
      try {
        driver::Source parsed(source, "random.attn");
        ++checked;
      } catch (const std::exception &e) {
        ADD_FAILURE() << e.what() << "\n" << source;
      }
    }
  }
  EXPECT_GT(checked, 100);
}

} // namespace
