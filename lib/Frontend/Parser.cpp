//===- Parser.cpp - recursive-descent parser for .attn --------------------===//
#include "lib/Frontend/Parser.h"

#include "lib/Frontend/Lexer.h"
#include "lib/Frontend/Sema.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace attn::fe {
namespace {

class Parser {
public:
  Parser(const SourceFile &file, Diagnostics &diags)
      : lexer(file, diags), diags(diags), source(file.text) {
    tok = lexer.next();
  }

  Program parseFile();

private:
  // Token helpers.
  void advance() {
    prevEnd = tok.loc.offset + tok.loc.length;
    tok = lexer.next();
  }
  bool is(Tok k) const { return tok.kind == k; }
  bool isKeyword(const char *kw) const {
    return tok.kind == Tok::Ident && tok.text == kw;
  }
  bool consume(Tok k) {
    if (!is(k))
      return false;
    advance();
    return true;
  }
  /// Reports "expected X, got Y" at the current token.
  void expected(const std::string &what);
  bool expect(Tok k, const char *context);
  bool expectIdent(std::string &out, SourceLoc &loc, const char *what);
  void skipToDeclEnd();

  bool parseVariant(Program &program);
  bool parseDecl(Variant &v);
  bool parseFuncDef(std::optional<FuncDef> &slot, const char *name,
                    unsigned arity, const char *signature);

  ExprPtr parseExpr();
  ExprPtr parseTernary();
  ExprPtr parseBinary(int level);
  ExprPtr parseUnary();
  ExprPtr parsePostfix();
  ExprPtr parsePrimary();
  bool parseArgs(Tok close, std::vector<ExprPtr> &args);
  ExprPtr finish(ExprPtr e);

  Lexer lexer;
  Diagnostics &diags;
  const std::string &source;
  Token tok;
  uint32_t prevEnd = 0; // just past the previous token
  unsigned nesting = 0;
};

std::string describe(const Token &t) {
  switch (t.kind) {
  case Tok::Ident:
    return "'" + t.text + "'";
  case Tok::Int:
  case Tok::Float:
    return "'" + t.text + "'";
  default:
    return tokSpelling(t.kind);
  }
}

void Parser::expected(const std::string &what) {
  if (is(Tok::Error))
    return; // the lexer already reported this token
  diags.error(tok.loc, "expected " + what + ", got " + describe(tok));
}

bool Parser::expect(Tok k, const char *context) {
  if (consume(k))
    return true;
  std::string what = tokSpelling(k);
  if (context && *context)
    what += std::string(" ") + context;
  // A missing ';' or ')' is best shown where it belongs: right after the
  // previous token, when the next one is already on another line.
  bool onNewLine = false;
  for (uint32_t i = prevEnd; i < tok.loc.offset && i < source.size(); ++i)
    onNewLine |= source[i] == '\n';
  if (onNewLine && !is(Tok::Error)) {
    diags.error({prevEnd, 1}, "expected " + what + ", got " + describe(tok));
    return false;
  }
  expected(what);
  return false;
}

bool Parser::expectIdent(std::string &out, SourceLoc &loc, const char *what) {
  if (!is(Tok::Ident)) {
    expected(what);
    return false;
  }
  out = tok.text;
  loc = tok.loc;
  advance();
  return true;
}

void Parser::skipToDeclEnd() {
  int depth = 0;
  while (!is(Tok::Eof)) {
    if (is(Tok::LBrace) || is(Tok::LParen) || is(Tok::LBracket))
      ++depth;
    if (is(Tok::RParen) || is(Tok::RBracket))
      depth = depth > 0 ? depth - 1 : 0;
    if (is(Tok::RBrace)) {
      if (depth == 0)
        return; // leave it to close the variant
      --depth;
    }
    if (is(Tok::Semi) && depth == 0) {
      advance();
      return;
    }
    advance();
  }
}

Program Parser::parseFile() {
  Program program;
  while (!is(Tok::Eof) && !diags.saturated()) {
    if (!isKeyword("variant")) {
      expected("'variant'");
      // Resynchronize on the next 'variant' keyword.
      while (!is(Tok::Eof) && !isKeyword("variant"))
        advance();
      continue;
    }
    parseVariant(program);
  }
  return program;
}

bool Parser::parseVariant(Program &program) {
  advance(); // 'variant'
  Variant v;
  if (!expectIdent(v.name, v.loc, "a variant name after 'variant'")) {
    while (!is(Tok::Eof) && !isKeyword("variant"))
      advance();
    return false;
  }
  if (!expect(Tok::LBrace, "to open the variant body")) {
    while (!is(Tok::Eof) && !isKeyword("variant"))
      advance();
    return false;
  }
  while (!is(Tok::RBrace) && !is(Tok::Eof) && !diags.saturated()) {
    if (!parseDecl(v))
      skipToDeclEnd();
  }
  if (!is(Tok::RBrace)) {
    expected("'}' to close variant '" + v.name + "'");
  } else {
    advance();
  }
  program.variants.push_back(std::move(v));
  return true;
}

bool Parser::parseFuncDef(std::optional<FuncDef> &slot, const char *name,
                          unsigned arity, const char *signature) {
  FuncDef f;
  f.loc = tok.loc;
  if (slot) {
    diags.error(tok.loc, std::string("'") + name +
                             "' is defined twice in this variant");
    return false;
  }
  advance();
  if (!expect(Tok::LParen, (std::string("after '") + name + "'").c_str()))
    return false;
  while (!is(Tok::RParen)) {
    std::string p;
    SourceLoc loc;
    if (!expectIdent(p, loc, "a parameter name"))
      return false;
    f.paramNames.push_back(p);
    f.paramLocs.push_back(loc);
    if (!consume(Tok::Comma))
      break;
  }
  if (!expect(Tok::RParen, "to close the parameter list"))
    return false;
  if (f.paramNames.size() != arity) {
    diags.error(f.loc, std::string("expected ") + name + signature + ", got " +
                           std::to_string(f.paramNames.size()) +
                           " parameters");
    return false;
  }
  if (!expect(Tok::Assign, (std::string("after ") + name + "(...)").c_str()))
    return false;
  f.body = parseExpr();
  if (!f.body)
    return false;
  if (!expect(Tok::Semi, "after the expression"))
    return false;
  slot = std::move(f);
  return true;
}

bool Parser::parseDecl(Variant &v) {
  if (!is(Tok::Ident)) {
    expected("a declaration (param, const, tensor, let, scale, score, mask, "
             "sink, normalize, select, kv_index, out_dtype)");
    return false;
  }
  std::string kw = tok.text;
  SourceLoc kwLoc = tok.loc;
  if (kw == "param") {
    advance();
    ParamDecl p;
    if (!expectIdent(p.name, p.loc, "a parameter name") ||
        !expect(Tok::Colon, "after the parameter name"))
      return false;
    std::string type;
    SourceLoc typeLoc;
    if (!expectIdent(type, typeLoc, "a parameter type (i32 or f32)"))
      return false;
    if (type == "i32") {
      p.type = Type::I32;
    } else if (type == "f32") {
      p.type = Type::F32;
    } else {
      diags.error(typeLoc, "expected a parameter type i32 or f32, got '" +
                               type + "'");
      return false;
    }
    if (consume(Tok::Assign)) {
      p.defaultExpr = parseExpr();
      if (!p.defaultExpr)
        return false;
    }
    if (!expect(Tok::Semi, "after the parameter declaration"))
      return false;
    v.params.push_back(std::move(p));
    return true;
  }
  if (kw == "const" || kw == "let") {
    advance();
    std::string name;
    SourceLoc loc;
    if (!expectIdent(name, loc, ("a name after '" + kw + "'").c_str()) ||
        !expect(Tok::Assign, ("after the " + kw + " name").c_str()))
      return false;
    ExprPtr e = parseExpr();
    if (!e || !expect(Tok::Semi, "after the expression"))
      return false;
    if (kw == "const") {
      ConstDecl c;
      c.name = name;
      c.loc = loc;
      c.expr = std::move(e);
      v.consts.push_back(std::move(c));
    } else {
      LetDecl l;
      l.name = name;
      l.loc = loc;
      l.expr = std::move(e);
      v.lets.push_back(std::move(l));
    }
    return true;
  }
  if (kw == "tensor") {
    advance();
    TensorDecl t;
    if (!expectIdent(t.name, t.loc, "a tensor name") ||
        !expect(Tok::Colon, "after the tensor name"))
      return false;
    std::string dtype;
    if (!expectIdent(dtype, t.dtypeLoc, "an element type (i32, f32, f16, bf16)"))
      return false;
    auto dt = parseDType(dtype);
    if (!dt) {
      diags.error(t.dtypeLoc, "expected an element type i32, f32, f16 or "
                              "bf16, got '" + dtype + "'");
      return false;
    }
    t.dtype = *dt;
    if (!expect(Tok::LBracket, "to open the tensor's dimensions"))
      return false;
    if (!parseArgs(Tok::RBracket, t.dims))
      return false;
    if (t.dims.empty()) {
      diags.error(t.loc, "expected at least one dimension for tensor '" +
                             t.name + "'");
      return false;
    }
    if (!expect(Tok::Semi, "after the tensor declaration"))
      return false;
    v.tensors.push_back(std::move(t));
    return true;
  }
  if (kw == "scale") {
    if (v.scale) {
      diags.error(kwLoc, "'scale' is set twice in this variant");
      return false;
    }
    advance();
    v.scaleLoc = kwLoc;
    if (!expect(Tok::Assign, "after 'scale'"))
      return false;
    ExprPtr e = parseExpr();
    if (!e || !expect(Tok::Semi, "after the expression"))
      return false;
    v.scale = std::move(e);
    return true;
  }
  if (kw == "score")
    return parseFuncDef(v.score, "score", 5, "(s, b, h, q, kv)");
  if (kw == "mask")
    return parseFuncDef(v.mask, "mask", 4, "(b, h, q, kv)");
  if (kw == "sink")
    return parseFuncDef(v.sink, "sink", 1, "(h)");
  if (kw == "normalize") {
    if (v.normalizeLoc) {
      diags.error(kwLoc, "'normalize' is set twice in this variant");
      return false;
    }
    advance();
    if (!expect(Tok::Assign, "after 'normalize'"))
      return false;
    std::string name;
    SourceLoc loc;
    if (!expectIdent(name, loc,
                     ("a normalizer (" + allNormalizerNames(", ") + ")")
                         .c_str()))
      return false;
    if (const NormalizerTraits *known = findNormalizer(name)) {
      v.normalize = known->kind;
    } else {
      std::vector<std::string> names;
      for (const NormalizerTraits &t : kNormalizers)
        names.emplace_back(t.name);
      std::string hint = closestName(name, names);
      diags.error(loc, "unknown normalizer '" + name + "'" +
                           (hint.empty() ? "; expected " + allNormalizerNames()
                                         : "; did you mean '" + hint + "'?"));
      return false;
    }
    v.normalizeLoc = loc;
    return expect(Tok::Semi, "after the normalizer");
  }
  if (kw == "out_dtype") {
    advance();
    if (!expect(Tok::Assign, "after 'out_dtype'"))
      return false;
    std::string name;
    if (!expectIdent(name, v.outDTypeLoc, "an output type (f32, f16, bf16)"))
      return false;
    auto dt = parseDType(name);
    if (!dt || *dt == DType::I32) {
      diags.error(v.outDTypeLoc,
                  "expected an output type f32, f16 or bf16, got '" + name +
                      "'");
      return false;
    }
    v.outDType = dt;
    return expect(Tok::Semi, "after the output type");
  }
  if (kw == "kv_index") {
    if (v.kvIndex) {
      diags.error(kwLoc, "'kv_index' is set twice in this variant");
      return false;
    }
    advance();
    if (!expect(Tok::Assign, "after 'kv_index'"))
      return false;
    std::string name;
    if (!expectIdent(name, v.kvIndexLoc, "the name of a captured i32 tensor "
                                         "[B, Hkv, N] of key positions"))
      return false;
    v.kvIndex = name;
    return expect(Tok::Semi, "after the kv_index tensor");
  }
  if (kw == "select") {
    SelectDecl s;
    s.loc = kwLoc;
    advance();
    if (!expect(Tok::LParen, "after 'select'"))
      return false;
    std::string key;
    SourceLoc keyLoc;
    if (!expectIdent(key, keyLoc, "'size'"))
      return false;
    if (key != "size") {
      diags.error(keyLoc, "expected 'size', got '" + key + "'");
      return false;
    }
    if (!expect(Tok::Assign, "after 'size'"))
      return false;
    s.blockSize = parseExpr();
    if (!s.blockSize || !expect(Tok::RParen, "to close select(...)") ||
        !expect(Tok::Assign, "after select(...)"))
      return false;
    std::string rule;
    SourceLoc ruleLoc;
    if (!expectIdent(rule, ruleLoc, "a selection rule (topk, mass, above)"))
      return false;
    if (rule == "topk")
      s.kind = SelectKind::TopK;
    else if (rule == "mass")
      s.kind = SelectKind::Mass;
    else if (rule == "above")
      s.kind = SelectKind::Above;
    else {
      diags.error(ruleLoc, "expected a selection rule topk, mass or above, "
                           "got '" + rule + "'");
      return false;
    }
    if (!expect(Tok::LParen, "after the selection rule"))
      return false;
    s.argument = parseExpr();
    if (!s.argument || !expect(Tok::RParen, "to close the selection rule") ||
        !expect(Tok::Semi, "after the select declaration"))
      return false;
    if (v.select) {
      diags.error(kwLoc, "'select' is set twice in this variant");
      return false;
    }
    v.select = std::move(s);
    return true;
  }
  static const std::vector<std::string> keywords = {
      "param", "const",     "tensor", "scale",  "score",    "mask",
      "sink",  "normalize", "select", "let",    "out_dtype", "kv_index"};
  std::string hint = closestName(kw, keywords);
  diags.error(kwLoc, "unknown declaration '" + kw + "'" +
                         (hint.empty() ? "; expected param, const, tensor, "
                                         "let, scale, score, mask, sink, "
                                         "normalize, select, kv_index or "
                                         "out_dtype"
                                       : "; did you mean '" + hint + "'?"));
  return false;
}

// Binary precedence levels from loosest to tightest (DSL.md "Expressions").
struct BinLevel {
  std::initializer_list<std::pair<Tok, BinaryOp>> ops;
};
static const BinLevel kLevels[] = {
    {{{Tok::OrOr, BinaryOp::Or}}},
    {{{Tok::AndAnd, BinaryOp::And}}},
    {{{Tok::EqEq, BinaryOp::Eq},
      {Tok::NotEq, BinaryOp::Ne},
      {Tok::Lt, BinaryOp::Lt},
      {Tok::Le, BinaryOp::Le},
      {Tok::Gt, BinaryOp::Gt},
      {Tok::Ge, BinaryOp::Ge}}},
    {{{Tok::Plus, BinaryOp::Add}, {Tok::Minus, BinaryOp::Sub}}},
    {{{Tok::Star, BinaryOp::Mul},
      {Tok::Slash, BinaryOp::Div},
      {Tok::Percent, BinaryOp::Mod}}},
};
static constexpr int kNumLevels = sizeof(kLevels) / sizeof(kLevels[0]);

ExprPtr Parser::finish(ExprPtr e) {
  unsigned depth = 0;
  for (const ExprPtr &a : e->args)
    depth = std::max(depth, a->depth);
  e->depth = depth + 1;
  if (e->depth > kMaxExprHeight) {
    diags.error(e->loc, "expression is too deep: more than " +
                            std::to_string(kMaxExprHeight) +
                            " levels of operators (each operator of a chain "
                            "like a + b + c adds one); split it with 'let'");
    return nullptr;
  }
  return e;
}

ExprPtr Parser::parseExpr() {
  // Guards the recursion itself (parentheses, unary chains, ternaries).
  if (nesting >= kMaxExprDepth) {
    diags.error(tok.loc, "expression is nested too deeply (more than " +
                             std::to_string(kMaxExprDepth) +
                             " levels); split it with 'let'");
    return nullptr;
  }
  ++nesting;
  ExprPtr e = parseTernary();
  --nesting;
  return e;
}

ExprPtr Parser::parseTernary() {
  ExprPtr cond = parseBinary(0);
  if (!cond || !is(Tok::Question))
    return cond;
  SourceLoc loc = tok.loc;
  advance();
  ExprPtr a = parseExpr();
  if (!a || !expect(Tok::Colon, "in the conditional expression"))
    return nullptr;
  ExprPtr b = parseExpr();
  if (!b)
    return nullptr;
  auto e = std::make_unique<Expr>(ExprKind::Ternary, loc);
  e->args.push_back(std::move(cond));
  e->args.push_back(std::move(a));
  e->args.push_back(std::move(b));
  return finish(std::move(e));
}

ExprPtr Parser::parseBinary(int level) {
  if (level == kNumLevels)
    return parseUnary();
  ExprPtr lhs = parseBinary(level + 1);
  while (lhs) {
    std::optional<BinaryOp> op;
    for (auto &[t, o] : kLevels[level].ops)
      if (is(t))
        op = o;
    if (!op)
      break;
    SourceLoc loc = tok.loc;
    advance();
    ExprPtr rhs = parseBinary(level + 1);
    if (!rhs)
      return nullptr;
    auto e = std::make_unique<Expr>(ExprKind::Binary, loc);
    e->binaryOp = *op;
    e->args.push_back(std::move(lhs));
    e->args.push_back(std::move(rhs));
    lhs = finish(std::move(e));
  }
  return lhs;
}

ExprPtr Parser::parseUnary() {
  if (is(Tok::Minus) || is(Tok::Bang)) {
    SourceLoc loc = tok.loc;
    UnaryOp op = is(Tok::Minus) ? UnaryOp::Neg : UnaryOp::Not;
    advance();
    if (nesting >= kMaxExprDepth) {
      diags.error(loc, "expression is nested too deeply");
      return nullptr;
    }
    ++nesting;
    ExprPtr operand = parseUnary();
    --nesting;
    if (!operand)
      return nullptr;
    auto e = std::make_unique<Expr>(ExprKind::Unary, loc);
    e->unaryOp = op;
    e->args.push_back(std::move(operand));
    return finish(std::move(e));
  }
  return parsePostfix();
}

bool Parser::parseArgs(Tok close, std::vector<ExprPtr> &args) {
  if (consume(close))
    return true;
  while (true) {
    ExprPtr a = parseExpr();
    if (!a)
      return false;
    args.push_back(std::move(a));
    if (consume(Tok::Comma))
      continue;
    if (consume(close))
      return true;
    expected(std::string("',' or ") + tokSpelling(close));
    return false;
  }
}

ExprPtr Parser::parsePostfix() {
  ExprPtr e = parsePrimary();
  if (!e || !is(Tok::LBracket))
    return e;
  if (e->kind != ExprKind::Name) {
    diags.error(tok.loc, "only a captured tensor can be indexed");
    return nullptr;
  }
  advance();
  auto idx = std::make_unique<Expr>(ExprKind::Index, e->loc);
  idx->name = e->name;
  if (!parseArgs(Tok::RBracket, idx->args))
    return nullptr;
  return finish(std::move(idx));
}

ExprPtr Parser::parsePrimary() {
  SourceLoc loc = tok.loc;
  switch (tok.kind) {
  case Tok::Int: {
    auto e = std::make_unique<Expr>(ExprKind::IntLit, loc);
    errno = 0;
    char *end = nullptr;
    unsigned long long v = std::strtoull(tok.text.c_str(), &end, 10);
    // 2147483648 is accepted so that `-2147483648` can be written.
    if (errno == ERANGE || v > 2147483648ULL) {
      diags.error(loc, "integer literal '" + tok.text +
                           "' does not fit in i32");
      return nullptr;
    }
    e->intValue = static_cast<int64_t>(v);
    advance();
    return finish(std::move(e));
  }
  case Tok::Float: {
    auto e = std::make_unique<Expr>(ExprKind::FloatLit, loc);
    e->floatValue = std::strtod(tok.text.c_str(), nullptr);
    advance();
    return finish(std::move(e));
  }
  case Tok::LParen: {
    advance();
    ExprPtr inner = parseExpr();
    if (!inner || !expect(Tok::RParen, "to close '('"))
      return nullptr;
    return inner;
  }
  case Tok::Ident: {
    std::string name = tok.text;
    advance();
    if (name == "true" || name == "false") {
      auto e = std::make_unique<Expr>(ExprKind::BoolLit, loc);
      e->boolValue = name == "true";
      return finish(std::move(e));
    }
    if (name == "inf") {
      auto e = std::make_unique<Expr>(ExprKind::FloatLit, loc);
      e->floatValue = HUGE_VAL;
      return finish(std::move(e));
    }
    if (is(Tok::LParen)) {
      advance();
      auto e = std::make_unique<Expr>(ExprKind::Call, loc);
      e->name = name;
      if (!parseArgs(Tok::RParen, e->args))
        return nullptr;
      return finish(std::move(e));
    }
    auto e = std::make_unique<Expr>(ExprKind::Name, loc);
    e->name = name;
    return finish(std::move(e));
  }
  default:
    expected("an expression");
    return nullptr;
  }
}

} // namespace

Program parseProgram(const SourceFile &file, Diagnostics &diags) {
  Parser parser(file, diags);
  return parser.parseFile();
}

Program parseAndCheck(const SourceFile &file, Diagnostics &diags) {
  Program program = parseProgram(file, diags);
  if (!diags.hasErrors())
    checkProgram(program, diags);
  return program;
}

} // namespace attn::fe
