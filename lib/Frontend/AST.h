//===- AST.h - abstract syntax of .attn variants --------------------------===//
//
// The parser builds these nodes; Sema resolves names and assigns types in
// place, so that Import (to the attn dialect) and the float64 reference walk
// one fully checked tree.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_FRONTEND_AST_H
#define ATTN_FRONTEND_AST_H

#include "lib/Frontend/Diagnostics.h"
#include "runtime/support/Normalizers.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace attn::fe {

/// Value types of the expression language.
enum class Type { Invalid, I32, F32, Bool };
const char *typeName(Type t);

/// Element types of captured tensors and outputs.
enum class DType { F32, F16, BF16, I32 };
const char *dtypeName(DType t);
std::optional<DType> parseDType(const std::string &name);

enum class ExprKind { IntLit, FloatLit, BoolLit, Name, Unary, Binary, Ternary, Call, Index };
enum class UnaryOp { Neg, Not };
enum class BinaryOp { Add, Sub, Mul, Div, Mod, Lt, Le, Gt, Ge, Eq, Ne, And, Or };
const char *binaryOpSpelling(BinaryOp op);

enum class Builtin {
  Exp, Exp2, Log, Log2, Sqrt, Rsqrt, Tanh, Sigmoid, Softplus, Abs, Min, Max,
  Floor, Ceil, Sign, Clamp, Where, Float, Int
};
std::optional<Builtin> lookupBuiltin(const std::string &name);
const char *builtinName(Builtin b);
/// Number of arguments a builtin takes.
unsigned builtinArity(Builtin b);

/// The loop indices a region receives. `hkv` is derived from `h`.
enum class IndexVar { S, B, H, Q, KV, HKV };
constexpr unsigned kNumIndexVars = 6;
const char *indexVarName(IndexVar v);
inline unsigned bit(IndexVar v) { return 1u << static_cast<unsigned>(v); }

/// Problem sizes (DSL.md): same order as the dialect's `attn::Size` enum.
enum class SizeVar { B, Hq, Hkv, Sq, Skv, D, Dv };
constexpr unsigned kNumSizeVars = 7;
const char *sizeVarName(SizeVar v);
std::optional<SizeVar> lookupSizeVar(const std::string &name);

/// What a resolved name refers to.
enum class NameKind { Unresolved, Index, Size, Param, Const, Let, Tensor };

struct Expr {
  ExprKind kind;
  SourceLoc loc;
  Type type = Type::Invalid;

  int64_t intValue = 0;    // IntLit
  double floatValue = 0;   // FloatLit
  bool boolValue = false;  // BoolLit
  std::string name;        // Name, Index (tensor), Call (builtin)
  UnaryOp unaryOp = UnaryOp::Neg;
  BinaryOp binaryOp = BinaryOp::Add;
  Builtin builtin = Builtin::Exp;

  // Set by Sema for Name and Index nodes.
  NameKind nameKind = NameKind::Unresolved;
  int ref = -1; // IndexVar / SizeVar / param / const / let / tensor index

  std::vector<std::unique_ptr<Expr>> args;
  unsigned depth = 1; // height of this subtree; bounded by the parser

  Expr(ExprKind kind, SourceLoc loc) : kind(kind), loc(loc) {}
};
using ExprPtr = std::unique_ptr<Expr>;

struct ParamDecl {
  std::string name;
  SourceLoc loc;
  Type type = Type::I32;
  ExprPtr defaultExpr;          // literal, possibly negated
  std::optional<double> defaultValue; // set by Sema
};

struct ConstDecl {
  std::string name;
  SourceLoc loc;
  ExprPtr expr;
  Type type = Type::Invalid; // set by Sema
  double value = 0;          // folded by Sema (i32 values are exact)
};

struct TensorDecl {
  std::string name;
  SourceLoc loc;
  DType dtype = DType::F32;
  SourceLoc dtypeLoc;
  std::vector<ExprPtr> dims;
  /// Element type seen by expressions (f16/bf16 read as f32).
  Type valueType() const { return dtype == DType::I32 ? Type::I32 : Type::F32; }
};

struct LetDecl {
  std::string name;
  SourceLoc loc;
  ExprPtr expr;
  // Set by Sema: index variables read, directly or through other lets,
  // and the lets this one reads directly.
  unsigned usedIndexVars = 0;
  std::vector<int> letDeps;
  bool checked = false;
};

/// `score(...)`, `mask(...)`, `sink(...)`: positional parameter names and a
/// body.
struct FuncDef {
  SourceLoc loc;
  std::vector<std::string> paramNames;
  std::vector<SourceLoc> paramLocs;
  ExprPtr body;
};

// The normalizers and their properties are runtime/support/Normalizers.h's
// table; the import maps a kind to the dialect's Normalize by name.
using ::attn::NormalizeKind;
/// The DSL name (null-terminated: the table's names are string literals).
inline const char *normalizeName(NormalizeKind k) {
  return normalizerTraits(k).name.data();
}

enum class SelectKind { TopK, Mass, Above };
struct SelectDecl {
  SourceLoc loc;
  ExprPtr blockSize;
  SelectKind kind = SelectKind::TopK;
  ExprPtr argument;
  int64_t size = 0; // folded by Sema
};

struct Variant {
  std::string name;
  SourceLoc loc;
  std::vector<ParamDecl> params;
  std::vector<ConstDecl> consts;
  std::vector<TensorDecl> tensors;
  std::vector<LetDecl> lets;
  ExprPtr scale;
  SourceLoc scaleLoc;
  std::optional<FuncDef> score, mask, sink;
  NormalizeKind normalize = NormalizeKind::Softmax;
  std::optional<SourceLoc> normalizeLoc;
  std::optional<DType> outDType;
  SourceLoc outDTypeLoc;
  std::optional<SelectDecl> select;
  /// `kv_index = NAME;`: attend only to the key positions listed in the
  /// captured tensor NAME (i32 [B, Hkv, N]); the tensor's index once
  /// resolved by Sema.
  std::optional<std::string> kvIndex;
  SourceLoc kvIndexLoc;
  int kvIndexTensor = -1;

  bool hasRowSum() const { return normalizerTraits(normalize).rowSum; }
  bool allowsSink() const { return normalizerTraits(normalize).allowsSink; }
  int findParam(const std::string &n) const;
  int findTensor(const std::string &n) const;
};

struct Program {
  std::vector<Variant> variants;
  const Variant *find(const std::string &name) const;
};

} // namespace attn::fe

#endif // ATTN_FRONTEND_AST_H

namespace attn::fe {
/// The expression as source-like text (for messages and metadata).
std::string printExpr(const Expr &e, const Variant &v);
/// Whether the variant's score or scale expression reads an f32 captured
/// tensor (directly or through lets): then its backward adds to that
/// tensor's gradient per entry (attn.accumulate_grad in score_grad or
/// scale_grad), and the CPU backward cannot sum dQ in key-tile order
/// (attn-tile-backward's ordered-dq), whose first phase keeps no
/// per-group gradient copies (f32 params get one slot per work item).
bool scoreOrScaleReadsF32Tensors(const Variant &v);
/// A checked tensor-dimension expression in reverse Polish notation over
/// sizes, params and integers, as the runtime evaluates it.
std::string dimToRpn(const Expr &e, const Variant &v);
} // namespace attn::fe
