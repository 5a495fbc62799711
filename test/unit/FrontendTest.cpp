//===- FrontendTest.cpp - parser robustness and language semantics --------===//
#include "lib/Driver/Compiler.h"
#include "lib/Frontend/Eval.h"
#include "lib/Frontend/Parser.h"
#include "dialect/Normalizers.h"
#include "runtime/support/Normalizers.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

using namespace attn;
using namespace attn::fe;

namespace {

/// Parses and checks; returns the rendered diagnostics ("" when clean).
std::string diagnose(const std::string &text) {
  SourceFile file{"t.attn", text};
  Diagnostics diags(file);
  Program program = parseAndCheck(file, diags);
  return diags.renderAll();
}

/// The folded value of `const x = EXPR;`.
Scalar foldConst(const std::string &expr) {
  SourceFile file{"t.attn", "variant v { const x = " + expr + "; }"};
  Diagnostics diags(file);
  Program program = parseAndCheck(file, diags);
  EXPECT_FALSE(diags.hasErrors()) << diags.renderAll();
  if (diags.hasErrors())
    return {};
  const ConstDecl &c = program.variants[0].consts[0];
  Scalar s;
  s.type = c.type;
  if (c.type == Type::I32)
    s.i = static_cast<int32_t>(c.value);
  else if (c.type == Type::Bool)
    s.b = c.value != 0;
  else
    s.f = c.value;
  return s;
}

TEST(Frontend, PrecedenceAndAssociativity) {
  EXPECT_EQ(foldConst("1 + 2 * 3").i, 7);
  EXPECT_EQ(foldConst("(1 + 2) * 3").i, 9);
  EXPECT_EQ(foldConst("10 - 4 - 3").i, 3);
  EXPECT_EQ(foldConst("100 / 10 / 5").i, 2);
  EXPECT_EQ(foldConst("-2 * -3").i, 6);
  EXPECT_TRUE(foldConst("1 < 2 && 3 > 2 || false").b);
  EXPECT_TRUE(foldConst("false && false || true").b);  // && binds tighter
  EXPECT_FALSE(foldConst("!(1 < 2)").b);
  EXPECT_EQ(foldConst("true ? 1 : 2").i, 1);
  EXPECT_EQ(foldConst("false ? 1 : true ? 2 : 3").i, 2); // right-assoc
  EXPECT_TRUE(foldConst("1 < 2 == true").b); // one comparison level
}

TEST(Frontend, FloorDivisionAndModulo) {
  EXPECT_EQ(foldConst("-1 / 64").i, -1);
  EXPECT_EQ(foldConst("-1 % 64").i, 63);
  EXPECT_EQ(foldConst("7 / -2").i, -4);
  EXPECT_EQ(foldConst("7 % -2").i, -1);
  EXPECT_EQ(foldConst("-7 / -2").i, 3);
  EXPECT_EQ(foldConst("5 / 0").i, 0);
  EXPECT_EQ(foldConst("5 % 0").i, 5);
  EXPECT_EQ(foldConst("-2147483648 / -1").i, INT32_MIN);
  EXPECT_EQ(foldConst("2147483647 + 1").i, INT32_MIN); // i32 wraps
  EXPECT_DOUBLE_EQ(foldConst("-7.5 % 2.0").f, 0.5);    // Python float %
}

TEST(Frontend, PromotionAndBuiltins) {
  Scalar s = foldConst("1 + 0.5");
  EXPECT_EQ(s.type, Type::F32);
  EXPECT_DOUBLE_EQ(s.f, 1.5);
  EXPECT_EQ(foldConst("3 / 2").type, Type::I32);
  EXPECT_DOUBLE_EQ(foldConst("3 / 2.0").f, 1.5);
  EXPECT_EQ(foldConst("int(-2.7)").i, -2);
  EXPECT_EQ(foldConst("int(1e30)").i, 2147483520);
  EXPECT_EQ(foldConst("min(3, 2)").type, Type::I32);
  EXPECT_EQ(foldConst("max(3, 2.5)").type, Type::F32);
  EXPECT_EQ(foldConst("clamp(7, 0, 5)").i, 5);
  EXPECT_EQ(foldConst("abs(-4)").i, 4);
  EXPECT_EQ(foldConst("sign(-4)").i, -1);
  EXPECT_DOUBLE_EQ(foldConst("sign(0.0)").f, 0.0);
  EXPECT_DOUBLE_EQ(foldConst("floor(-1.5)").f, -2.0);
  EXPECT_DOUBLE_EQ(foldConst("ceil(-1.5)").f, -1.0);
  EXPECT_DOUBLE_EQ(foldConst("where(1 > 2, 1, 2.5)").f, 2.5);
  EXPECT_NEAR(foldConst("sigmoid(0.0)").f, 0.5, 1e-12);
  EXPECT_NEAR(foldConst("softplus(0.0)").f, std::log(2.0), 1e-12);
  EXPECT_NEAR(foldConst("softplus(1000.0)").f, 1000.0, 1e-9);
  EXPECT_NEAR(foldConst("rsqrt(4.0)").f, 0.5, 1e-12);
  EXPECT_NEAR(foldConst("exp2(3.0) + log2(8.0)").f, 11.0, 1e-12);
  EXPECT_TRUE(std::isinf(foldConst("-inf").f));
  EXPECT_DOUBLE_EQ(foldConst("1e-3").f, 1e-3);
  EXPECT_DOUBLE_EQ(foldConst(".5").f, 0.5);
}

TEST(Frontend, CleanProgramsHaveNoDiagnostics) {
  EXPECT_EQ(diagnose("variant empty {}"), "");
  EXPECT_EQ(diagnose("variant a {} variant b { normalize = relu; }"), "");
  EXPECT_EQ(diagnose(R"(
    /* block comment */ variant v {
      param w: i32 = -4; param t: f32 = 2;   // int default for f32 is fine
      const c = 2 * 3; const d = c + 1;
      tensor x: f32[B, Skv / 2 + 1, c];
      let a = q - kv; let b2 = a * a;
      score(s, b, h, q, kv) = s + float(b2) * t + x[b, kv / 2, 0];
      mask(batch, head, i, j) = i >= j && b2 < w * w;
      sink(head) = float(head + hkv);
      out_dtype = f32;
    })"),
            "");
}

TEST(Frontend, ErrorsCarryLineColumnAndCaret) {
  std::string d = diagnose("variant v {\n  mask(b, h, q, kv) = kv < windw;\n}");
  EXPECT_EQ(d, "t.attn:2:28: error: unknown name 'windw'\n"
               "  mask(b, h, q, kv) = kv < windw;\n"
               "                           ^\n");
}

TEST(Frontend, TabsKeepTheCaretAligned) {
  std::string d = diagnose("variant v {\n\tmask(b, h, q, kv) = zz;\n}");
  EXPECT_NE(d.find("\tmask(b, h, q, kv) = zz;\n\t" + std::string(20, ' ') +
                   "^\n"),
            std::string::npos)
      << d;
}

TEST(Frontend, DeepNestingIsAnErrorNotACrash) {
  for (int depth : {300, 10000, 200000}) {
    std::string parens(depth, '(');
    std::string closes(depth, ')');
    std::string d = diagnose("variant v { scale = " + parens + "1.0" + closes +
                             "; }");
    EXPECT_NE(d.find("nested too deeply"), std::string::npos) << depth;
    std::string minus(depth, '-');
    d = diagnose("variant v { scale = " + minus + "1.0; }");
    EXPECT_NE(d.find("nested too deeply"), std::string::npos) << depth;
    std::string chain = "1.0";
    for (int i = 0; i < depth; ++i)
      chain += " + 1.0";
    d = diagnose("variant v { scale = " + chain + "; }");
    // A flat chain is no nesting, but a tree that tall is still refused.
    EXPECT_EQ(depth < 1024, d.empty()) << depth;
    if (depth >= 1024)
      EXPECT_NE(d.find("more than 1024 levels of operators"),
                std::string::npos)
          << depth;
  }
}

TEST(Frontend, FlatSumsAreNotNesting) {
  // A flat sum of 256 terms was "nested too deeply": chains count one
  // level per operator against a limit of 1024 (which compiles and runs
  // in about 1 MiB of stack), parentheses and unary operators against 256.
  for (int terms : {256, 1000}) {
    std::string sum = "s";
    for (int i = 1; i < terms; ++i)
      sum += " + s * " + std::to_string(i % 7) + ".0";
    std::string text = "variant v { score(s, b, h, q, kv) = " + sum + "; }";
    EXPECT_EQ(diagnose(text), "") << terms;
    Options o;
    o.headDim = 16;
    driver::Source source(text, "t.attn");
    driver::KernelPlan plan = driver::planKernel(source, o);
    EXPECT_NE(driver::emitStage(source, plan, driver::Stage::Attn)
                  .find("attn.attention"),
              std::string::npos);
  }
}

TEST(Frontend, LongLinesAreShownAroundTheColumn) {
  // The "too deep" diagnostic of a 12 KB line echoed all of it.
  std::string sum = "s";
  for (int i = 0; i < 1500; ++i)
    sum += " + s*2.0";
  std::string line = "variant v { score(s, b, h, q, kv) = " + sum + "; }";
  ASSERT_GT(line.size(), 10000u);
  std::string d = diagnose(line);
  EXPECT_NE(d.find("more than 1024 levels"), std::string::npos) << d;
  EXPECT_LT(d.size(), 500u) << d;
  // The window keeps the caret under the operator it names.
  size_t eol1 = d.find('\n'), eol2 = d.find('\n', eol1 + 1);
  std::string shown = d.substr(eol1 + 1, eol2 - eol1 - 1);
  std::string caret = d.substr(eol2 + 1, d.find('\n', eol2 + 1) - eol2 - 1);
  EXPECT_EQ(shown.substr(0, 3), "...");
  EXPECT_EQ(shown.substr(shown.size() - 3), "...");
  ASSERT_EQ(caret.back(), '^');
  EXPECT_EQ(shown[caret.size() - 1], '+') << shown << "\n" << caret;
}

TEST(Frontend, ANonAsciiCharacterIsOneError) {
  // One error per byte before; the caret counts characters.
  std::string d = diagnose("variant v {\n  mask(b, h, q, kv) = kv <= q\xc3\xa9;\n}");
  EXPECT_EQ(d, "t.attn:2:30: error: unexpected character '\xc3\xa9' (U+00E9); "
               "names and operators are ASCII\n"
               "  mask(b, h, q, kv) = kv <= q\xc3\xa9;\n"
               "                             ^\n");
  d = diagnose("variant v { mask(b, h, q, kv) = \xe2\x89\xa4 \xe2\x89\xa4; }");
  EXPECT_NE(d.find("(U+2264)"), std::string::npos) << d;
  EXPECT_EQ(std::count(d.begin(), d.end(), '^'), 2) << d;
  // Bytes that are not UTF-8: one error for the run.
  d = diagnose("variant v { \xff\xfe\x80 }");
  EXPECT_EQ(std::count(d.begin(), d.end(), '^'), 1) << d;
  EXPECT_NE(d.find("byte 0xff (and the 2 after it: not UTF-8 text)"),
            std::string::npos)
      << d;
}

TEST(Frontend, ConstantsThatFoldToInfOrNaN) {
  // `const c = 1.0 / 0.0;` in a score gave NaN everywhere without a word.
  SourceFile file{"t.attn", "variant v {\n  const c = 1.0 / 0.0;\n"
                            "  score(s, b, h, q, kv) = s * c;\n}"};
  Diagnostics diags(file);
  parseAndCheck(file, diags);
  EXPECT_FALSE(diags.hasErrors());
  EXPECT_TRUE(diags.hasWarnings());
  EXPECT_EQ(diags.renderAll(),
            "t.attn:2:17: warning: this constant divides by zero and folds to "
            "inf; every score it reaches would be infinite or NaN (write "
            "'inf' if that is meant)\n"
            "  const c = 1.0 / 0.0;\n"
            "                ^\n");
  // NaN cannot be meant: an error, wherever it is folded.
  EXPECT_NE(diagnose("variant v { const n = 0.0 / 0.0; }")
                .find("1:27: error: this constant folds to NaN"),
            std::string::npos);
  EXPECT_NE(diagnose("variant v { score(s, b, h, q, kv) = s + log(-1.0); }")
                .find("error: this constant folds to NaN"),
            std::string::npos);
  // Param defaults, overflow past f32 and constant subexpressions of a
  // score warn too.
  EXPECT_NE(diagnose("variant v { param t: f32 = 1e39; }")
                .find("warning: this constant overflows f32"),
            std::string::npos);
  EXPECT_NE(diagnose("variant v { score(s, b, h, q, kv) = s * exp(100.0); }")
                .find("warning: this constant overflows f32"),
            std::string::npos);
  EXPECT_NE(diagnose("variant v { const c = -1.0 / 0.0; }")
                .find("folds to -inf"),
            std::string::npos);
  // A scale multiplies every score: one that is not finite is an error.
  EXPECT_NE(diagnose("variant v { scale = inf; }")
                .find("error: scale folds to inf"),
            std::string::npos);
  // Infinities written as such are meant; runtime values are not folded.
  EXPECT_EQ(diagnose("variant v { const lo = -inf; param w: f32 = 0.0;\n"
                     "  score(s, b, h, q, kv) = where(kv > q, lo, s / w); }"),
            "");
}

TEST(Frontend, LongLetChainsCompile) {
  // 2000 lets, each doubling the last: linear work, no deep recursion.
  std::string text = "variant v { let a0 = q;";
  for (int i = 1; i < 2000; ++i)
    text += " let a" + std::to_string(i) + " = a" + std::to_string(i - 1) +
            " + a" + std::to_string(i - 1) + ";";
  text += " mask(b, h, q, kv) = a1999 >= kv; }";
  EXPECT_EQ(diagnose(text), "");
  Options o;
  o.headDim = 16;
  driver::Source source(text, "t.attn");
  driver::KernelPlan plan = driver::planKernel(source, o);
  std::string ir = driver::emitStage(source, plan, driver::Stage::Attn);
  EXPECT_NE(ir.find("attn.attention"), std::string::npos);
}

TEST(Frontend, RandomBytesNeverCrash) {
  std::mt19937 rng(1234);
  const std::string alphabet =
      "variant v{}()[];:=+-*/%!<>&|?,. \n\t0123456789eE_abcdefghijklmnopqrstuvwxyz"
      "sqkvbhparamconsttensorletscoremasksinknormalizeselectout_dtype"
      "\x00\xff\x80\"'#$@\\";
  std::uniform_int_distribution<size_t> pick(0, alphabet.size() - 1);
  std::uniform_int_distribution<int> len(0, 400);
  for (int i = 0; i < 3000; ++i) {
    std::string text;
    int n = len(rng);
    for (int j = 0; j < n; ++j)
      text += alphabet[pick(rng)];
    diagnose(text); // must return; any diagnostics are fine
  }
}

TEST(Frontend, MutatedExamplesNeverCrash) {
  const std::string base = R"(variant sliding_sink {
  param window: i32 = 4096; param sinks: i32 = 4; const cap = 30.0;
  tensor doc: i32[B, Skv];
  let same = doc[b, q] == doc[b, kv];
  score(s, b, h, q, kv) = cap * tanh(s / cap);
  mask(b, h, q, kv) = ((kv <= q && q - kv < window) || kv < sinks) && same;
})";
  std::mt19937 rng(99);
  std::uniform_int_distribution<int> op(0, 2);
  for (int i = 0; i < 3000; ++i) {
    std::string text = base;
    for (int m = 0; m < 3; ++m) {
      std::uniform_int_distribution<size_t> at(0, text.size() - 1);
      size_t p = at(rng);
      switch (op(rng)) {
      case 0: text.erase(p, 1); break;
      case 1: text.insert(p, 1, text[at(rng)]); break;
      default: std::swap(text[p], text[at(rng)]); break;
      }
    }
    std::string d = diagnose(text);
    if (d.empty()) {
      // Whatever still parses must also import and verify.
      driver::Source source(text, "t.attn");
      EXPECT_NO_THROW(driver::checkAll(source)) << text;
    }
  }
}

} // namespace

// The table in runtime/support/Normalizers.h is the source of every
// normalizer's name and properties: each row parses to its kind, names a
// case of the dialect's enum (matched by name, AttnBase.td), and the
// dialect's answers are the row's.
TEST(Frontend, EveryNormalizerRowReachesTheDialect) {
  for (const NormalizerTraits &row : kNormalizers) {
    std::string name(row.name);
    SourceFile file{"t.attn", "variant v { normalize = " + name + "; }"};
    Diagnostics diags(file);
    Program program = parseAndCheck(file, diags);
    ASSERT_FALSE(diags.hasErrors()) << name << ": " << diags.renderAll();
    EXPECT_EQ(program.variants[0].normalize, row.kind) << name;
    EXPECT_EQ(normalizeName(row.kind), name);
    std::optional<mlir::attn::Normalize> norm =
        mlir::attn::symbolizeNormalize(name);
    ASSERT_TRUE(norm.has_value()) << name << " is not a case of AttnBase.td";
    EXPECT_EQ(mlir::attn::hasRowSum(*norm), row.rowSum) << name;
    EXPECT_EQ(mlir::attn::hasRunningMax(*norm), row.runningMax) << name;
    EXPECT_EQ(mlir::attn::runsInLog2Domain(*norm), row.log2Domain) << name;
    EXPECT_EQ(mlir::attn::allowsSink(*norm), row.allowsSink) << name;
  }
  EXPECT_EQ(mlir::attn::rowSumNormalizerNames(), "softmax and softplus");
  EXPECT_EQ(findNormalizer("softmaxx"), nullptr);
}
