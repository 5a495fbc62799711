//===- Import.cpp - checked AST to the attn dialect -----------------------===//
#include "lib/Frontend/Import.h"

#include "dialect/AttnOps.h"
#include "lib/Frontend/Sema.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include <cmath>

using namespace mlir;

namespace attn::fe {

DType outputDType(const Variant &v, const KernelShape &shape) {
  return v.outDType ? *v.outDType : shape.dtype;
}

void registerImportDialects(MLIRContext &ctx) {
  ctx.loadDialect<mlir::attn::AttnDialect, arith::ArithDialect,
                  math::MathDialect, memref::MemRefDialect,
                  func::FuncDialect>();
}

std::string blockMapFunctionName(const std::string &variant) {
  return variant + "__block_map";
}

std::string backwardFunctionName(const std::string &variant) {
  return variant + "__backward";
}

std::string mergeFunctionName(const std::string &variant) {
  return variant + "__merge";
}

namespace {

/// The dialect's Normalize of `kind`: the case of the same name (the table
/// in runtime/support/Normalizers.h and AttnBase.td's enum agree in length,
/// dialect/Normalizers.cpp checks).
mlir::attn::Normalize dialectNormalize(NormalizeKind kind) {
  if (std::optional<mlir::attn::Normalize> norm =
          mlir::attn::symbolizeNormalize(normalizeName(kind)))
    return *norm;
  llvm::report_fatal_error(llvm::Twine("normalizer '") + normalizeName(kind) +
                           "' has no case in dialect/AttnBase.td");
}

mlir::Type elementType(MLIRContext *ctx, DType t) {
  switch (t) {
  case DType::F32: return Float32Type::get(ctx);
  case DType::F16: return Float16Type::get(ctx);
  case DType::BF16: return BFloat16Type::get(ctx);
  case DType::I32: return IntegerType::get(ctx, 32);
  }
  return {};
}

/// q/k/v/o/lse: dynamic sizes and strides except a unit innermost stride,
/// so any view with contiguous rows can be passed without a copy.
MemRefType rowStridedType(ArrayRef<int64_t> shape, mlir::Type elt) {
  SmallVector<int64_t> strides(shape.size(), ShapedType::kDynamic);
  strides.back() = 1;
  auto layout = StridedLayoutAttr::get(elt.getContext(), ShapedType::kDynamic,
                                       strides);
  return MemRefType::get(shape, elt, layout);
}

/// Emits the ops of one region body.
class RegionEmitter {
public:
  RegionEmitter(OpBuilder &b, const Variant &v, const KernelShape &shape,
                const SourceFile &file, ArrayRef<Value> params,
                ArrayRef<Value> captures)
      : b(b), v(v), shape(shape), file(file), params(params),
        captures(captures) {}

  /// Binds an index variable to a block argument.
  void bind(IndexVar iv, Value value) { indices[static_cast<int>(iv)] = value; }

  /// Materializes the lets `e` needs, then `e` itself, converted to `want`.
  Value emitRoot(const Expr &e, fe::Type want) {
    for (int l : letsNeededBy(v, e))
      lets[l] = emit(*v.lets[l].expr);
    return convert(emit(e), e.type, want, e.loc);
  }

private:
  Location loc(SourceLoc l) {
    auto [line, col] = file.lineCol(l.offset);
    return FileLineColLoc::get(b.getContext(), file.name, line, col);
  }
  Value i32Const(int32_t x, SourceLoc l) {
    return arith::ConstantIntOp::create(b, loc(l), x, 32);
  }
  Value f32Const(double x, SourceLoc l) {
    return arith::ConstantFloatOp::create(b, loc(l), b.getF32Type(),
                                          APFloat(static_cast<float>(x)));
  }
  Value convert(Value x, fe::Type from, fe::Type to, SourceLoc l) {
    if (from == to || to == fe::Type::Invalid)
      return x;
    if (from == fe::Type::I32 && to == fe::Type::F32)
      return b.createOrFold<arith::SIToFPOp>(loc(l), b.getF32Type(), x);
    return x;
  }
  Value index(IndexVar iv, SourceLoc l) {
    Value &slot = indices[static_cast<int>(iv)];
    if (!slot && iv == IndexVar::HKV) {
      // hkv = h / (Hq / Hkv): the kv head a query head reads (GQA/MQA).
      Value hq = mlir::attn::DimOp::create(b, loc(l), mlir::attn::Size::Hq);
      Value hkv = mlir::attn::DimOp::create(b, loc(l), mlir::attn::Size::Hkv);
      Value group = b.createOrFold<mlir::attn::FloorDivOp>(loc(l), hq, hkv);
      slot = b.createOrFold<mlir::attn::FloorDivOp>(
          loc(l), index(IndexVar::H, l), group);
    }
    return slot;
  }

  Value emit(const Expr &e);
  Value emitBinary(const Expr &e);
  Value emitCall(const Expr &e);

  OpBuilder &b;
  const Variant &v;
  const KernelShape &shape;
  const SourceFile &file;
  ArrayRef<Value> params, captures;
  Value indices[kNumIndexVars] = {};
  std::map<int, Value> lets;
};

Value RegionEmitter::emit(const Expr &e) {
  Location l = loc(e.loc);
  switch (e.kind) {
  case ExprKind::IntLit:
    return i32Const(static_cast<int32_t>(static_cast<uint32_t>(e.intValue)),
                    e.loc);
  case ExprKind::FloatLit:
    return f32Const(e.floatValue, e.loc);
  case ExprKind::BoolLit:
    return arith::ConstantIntOp::create(b, l, e.boolValue ? 1 : 0, 1);
  case ExprKind::Name:
    switch (e.nameKind) {
    case NameKind::Index:
      return index(static_cast<IndexVar>(e.ref), e.loc);
    case NameKind::Size:
      // D and Dv are static (compile options): constants fold further.
      if (e.ref == static_cast<int>(SizeVar::D))
        return i32Const(static_cast<int32_t>(shape.headDim), e.loc);
      if (e.ref == static_cast<int>(SizeVar::Dv))
        return i32Const(static_cast<int32_t>(shape.valueHeadDim), e.loc);
      return mlir::attn::DimOp::create(
          b, l, static_cast<mlir::attn::Size>(e.ref));
    case NameKind::Param:
      return params[e.ref];
    case NameKind::Const: {
      const ConstDecl &c = v.consts[e.ref];
      if (c.type == fe::Type::I32)
        return i32Const(static_cast<int32_t>(c.value), e.loc);
      if (c.type == fe::Type::Bool)
        return arith::ConstantIntOp::create(b, l, c.value != 0, 1);
      return f32Const(c.value, e.loc);
    }
    case NameKind::Let:
      return lets.at(e.ref);
    default:
      break;
    }
    break;
  case ExprKind::Index: {
    SmallVector<Value> idx;
    for (const ExprPtr &a : e.args)
      idx.push_back(emit(*a));
    Value x = mlir::attn::LoadOp::create(b, l, captures[e.ref], idx);
    if (!x.getType().isF32() && !x.getType().isInteger(32))
      x = arith::ExtFOp::create(b, l, b.getF32Type(), x);
    return x;
  }
  case ExprKind::Unary: {
    Value x = emit(*e.args[0]);
    if (e.unaryOp == UnaryOp::Not)
      return b.createOrFold<arith::XOrIOp>(
          l, x, arith::ConstantIntOp::create(b, l, 1, 1));
    if (e.type == fe::Type::I32)
      return b.createOrFold<arith::SubIOp>(l, i32Const(0, e.loc), x);
    return b.createOrFold<arith::NegFOp>(l, x);
  }
  case ExprKind::Binary:
    return emitBinary(e);
  case ExprKind::Ternary: {
    Value c = emit(*e.args[0]);
    Value x = convert(emit(*e.args[1]), e.args[1]->type, e.type, e.loc);
    Value y = convert(emit(*e.args[2]), e.args[2]->type, e.type, e.loc);
    return b.createOrFold<arith::SelectOp>(l, c, x, y);
  }
  case ExprKind::Call:
    return emitCall(e);
  }
  return {};
}

Value RegionEmitter::emitBinary(const Expr &e) {
  Location l = loc(e.loc);
  const Expr &lhsE = *e.args[0];
  const Expr &rhsE = *e.args[1];
  Value lhs = emit(lhsE), rhs = emit(rhsE);
  switch (e.binaryOp) {
  case BinaryOp::And:
    return b.createOrFold<arith::AndIOp>(l, lhs, rhs);
  case BinaryOp::Or:
    return b.createOrFold<arith::OrIOp>(l, lhs, rhs);
  case BinaryOp::Lt:
  case BinaryOp::Le:
  case BinaryOp::Gt:
  case BinaryOp::Ge:
  case BinaryOp::Eq:
  case BinaryOp::Ne: {
    bool isFloat = lhsE.type == fe::Type::F32 || rhsE.type == fe::Type::F32;
    if (!isFloat) {
      arith::CmpIPredicate p;
      switch (e.binaryOp) {
      case BinaryOp::Lt: p = arith::CmpIPredicate::slt; break;
      case BinaryOp::Le: p = arith::CmpIPredicate::sle; break;
      case BinaryOp::Gt: p = arith::CmpIPredicate::sgt; break;
      case BinaryOp::Ge: p = arith::CmpIPredicate::sge; break;
      case BinaryOp::Eq: p = arith::CmpIPredicate::eq; break;
      default: p = arith::CmpIPredicate::ne; break;
      }
      return b.createOrFold<arith::CmpIOp>(l, p, lhs, rhs);
    }
    lhs = convert(lhs, lhsE.type, fe::Type::F32, e.loc);
    rhs = convert(rhs, rhsE.type, fe::Type::F32, e.loc);
    arith::CmpFPredicate p;
    switch (e.binaryOp) {
    case BinaryOp::Lt: p = arith::CmpFPredicate::OLT; break;
    case BinaryOp::Le: p = arith::CmpFPredicate::OLE; break;
    case BinaryOp::Gt: p = arith::CmpFPredicate::OGT; break;
    case BinaryOp::Ge: p = arith::CmpFPredicate::OGE; break;
    case BinaryOp::Eq: p = arith::CmpFPredicate::OEQ; break;
    default: p = arith::CmpFPredicate::UNE; break;
    }
    return b.createOrFold<arith::CmpFOp>(l, p, lhs, rhs);
  }
  default:
    break;
  }
  if (e.type == fe::Type::I32) {
    switch (e.binaryOp) {
    case BinaryOp::Add: return b.createOrFold<arith::AddIOp>(l, lhs, rhs);
    case BinaryOp::Sub: return b.createOrFold<arith::SubIOp>(l, lhs, rhs);
    case BinaryOp::Mul: return b.createOrFold<arith::MulIOp>(l, lhs, rhs);
    case BinaryOp::Div:
      return b.createOrFold<mlir::attn::FloorDivOp>(l, lhs, rhs);
    default:
      return b.createOrFold<mlir::attn::FloorModOp>(l, lhs, rhs);
    }
  }
  lhs = convert(lhs, lhsE.type, fe::Type::F32, e.loc);
  rhs = convert(rhs, rhsE.type, fe::Type::F32, e.loc);
  switch (e.binaryOp) {
  case BinaryOp::Add: return b.createOrFold<arith::AddFOp>(l, lhs, rhs);
  case BinaryOp::Sub: return b.createOrFold<arith::SubFOp>(l, lhs, rhs);
  case BinaryOp::Mul: return b.createOrFold<arith::MulFOp>(l, lhs, rhs);
  case BinaryOp::Div: return b.createOrFold<arith::DivFOp>(l, lhs, rhs);
  default: {
    // Python's float %: a - floor(a / b) * b.
    Value q = b.createOrFold<math::FloorOp>(
        l, b.createOrFold<arith::DivFOp>(l, lhs, rhs));
    return b.createOrFold<arith::SubFOp>(
        l, lhs, b.createOrFold<arith::MulFOp>(l, q, rhs));
  }
  }
}

Value RegionEmitter::emitCall(const Expr &e) {
  Location l = loc(e.loc);
  SmallVector<Value> a;
  for (const ExprPtr &arg : e.args)
    a.push_back(emit(*arg));
  auto asF32 = [&](unsigned i) {
    return convert(a[i], e.args[i]->type, fe::Type::F32, e.loc);
  };
  auto asResult = [&](unsigned i) {
    return convert(a[i], e.args[i]->type, e.type, e.loc);
  };
  bool isInt = e.type == fe::Type::I32;
  switch (e.builtin) {
  case Builtin::Exp: return b.createOrFold<math::ExpOp>(l, asF32(0));
  case Builtin::Exp2: return b.createOrFold<math::Exp2Op>(l, asF32(0));
  case Builtin::Log: return b.createOrFold<math::LogOp>(l, asF32(0));
  case Builtin::Log2: return b.createOrFold<math::Log2Op>(l, asF32(0));
  case Builtin::Sqrt: return b.createOrFold<math::SqrtOp>(l, asF32(0));
  case Builtin::Rsqrt: return b.createOrFold<math::RsqrtOp>(l, asF32(0));
  case Builtin::Tanh: return b.createOrFold<math::TanhOp>(l, asF32(0));
  case Builtin::Sigmoid: {
    // 1 / (1 + exp(-x))
    Value one = f32Const(1.0, e.loc);
    Value ex = b.createOrFold<math::ExpOp>(
        l, b.createOrFold<arith::NegFOp>(l, asF32(0)));
    return b.createOrFold<arith::DivFOp>(
        l, one, b.createOrFold<arith::AddFOp>(l, one, ex));
  }
  case Builtin::Softplus: {
    // max(x, 0) + log1p(exp(-|x|)): no overflow for large |x|.
    Value x = asF32(0);
    Value zero = f32Const(0.0, e.loc);
    Value pos = b.createOrFold<arith::MaximumFOp>(l, x, zero);
    Value negAbs = b.createOrFold<arith::NegFOp>(
        l, b.createOrFold<math::AbsFOp>(l, x));
    Value tail = b.createOrFold<math::Log1pOp>(
        l, b.createOrFold<math::ExpOp>(l, negAbs));
    return b.createOrFold<arith::AddFOp>(l, pos, tail);
  }
  case Builtin::Abs:
    return isInt ? b.createOrFold<math::AbsIOp>(l, a[0])
                 : b.createOrFold<math::AbsFOp>(l, a[0]);
  case Builtin::Min:
    return isInt ? b.createOrFold<arith::MinSIOp>(l, a[0], a[1])
                 : b.createOrFold<arith::MinimumFOp>(l, asResult(0),
                                                     asResult(1));
  case Builtin::Max:
    return isInt ? b.createOrFold<arith::MaxSIOp>(l, a[0], a[1])
                 : b.createOrFold<arith::MaximumFOp>(l, asResult(0),
                                                     asResult(1));
  case Builtin::Floor:
    return isInt ? a[0] : b.createOrFold<math::FloorOp>(l, a[0]);
  case Builtin::Ceil:
    return isInt ? a[0] : b.createOrFold<math::CeilOp>(l, a[0]);
  case Builtin::Sign: {
    if (isInt) {
      Value zero = i32Const(0, e.loc);
      Value gt = b.createOrFold<arith::ExtUIOp>(
          l, b.getI32Type(),
          b.createOrFold<arith::CmpIOp>(l, arith::CmpIPredicate::sgt, a[0],
                                        zero));
      Value lt = b.createOrFold<arith::ExtUIOp>(
          l, b.getI32Type(),
          b.createOrFold<arith::CmpIOp>(l, arith::CmpIPredicate::slt, a[0],
                                        zero));
      return b.createOrFold<arith::SubIOp>(l, gt, lt);
    }
    // 1, -1, or x itself for 0, -0 and NaN, spelled x * 0 so that its
    // derivative (attn-differentiate) is 0 there too.
    Value zero = f32Const(0.0, e.loc);
    Value one = f32Const(1.0, e.loc), minusOne = f32Const(-1.0, e.loc);
    Value gt = b.createOrFold<arith::CmpFOp>(l, arith::CmpFPredicate::OGT,
                                             a[0], zero);
    Value lt = b.createOrFold<arith::CmpFOp>(l, arith::CmpFPredicate::OLT,
                                             a[0], zero);
    return b.createOrFold<arith::SelectOp>(
        l, gt, one,
        b.createOrFold<arith::SelectOp>(
            l, lt, minusOne, b.createOrFold<arith::MulFOp>(l, a[0], zero)));
  }
  case Builtin::Clamp:
    if (isInt)
      return b.createOrFold<arith::MinSIOp>(
          l, b.createOrFold<arith::MaxSIOp>(l, a[0], a[1]), a[2]);
    return b.createOrFold<arith::MinimumFOp>(
        l, b.createOrFold<arith::MaximumFOp>(l, asResult(0), asResult(1)),
        asResult(2));
  case Builtin::Where:
    return b.createOrFold<arith::SelectOp>(l, a[0], asResult(1), asResult(2));
  case Builtin::Float:
    return asF32(0);
  case Builtin::Int:
    if (e.args[0]->type == fe::Type::I32)
      return a[0];
    {
      // Saturate to the i32 range and map NaN to 0 (as the reference's
      // truncToInt does): a bare fptosi is undefined out of range.
      Value x = b.createOrFold<arith::MinimumFOp>(
          l, b.createOrFold<arith::MaximumFOp>(l, a[0],
                                               f32Const(-2147483648.0, e.loc)),
          f32Const(2147483520.0, e.loc));
      Value isNan = b.createOrFold<arith::CmpFOp>(
          l, arith::CmpFPredicate::UNO, x, x);
      x = b.createOrFold<arith::SelectOp>(l, isNan, f32Const(0.0, e.loc), x);
      return b.createOrFold<arith::FPToSIOp>(l, b.getI32Type(), x);
    }
  }
  return {};
}

} // namespace

bool hasBlockMap(const Variant &v) {
  return (v.mask || v.select) && !v.kvIndex;
}

void reportLseUnavailable(const Variant &v, Diagnostics &diags) {
  diags.error(v.normalizeLoc ? *v.normalizeLoc : v.loc,
              "lse exists for " +
                  normalizerNames([](const NormalizerTraits &t) {
                    return t.rowSum;
                  }, " and ") +
                  " only; variant '" + v.name + "' uses normalize = " +
                  normalizeName(v.normalize));
}

bool importVariant(ModuleOp module, const Variant &v, const KernelShape &shape,
                   const SourceFile &file, Diagnostics &diags) {
  MLIRContext *ctx = module.getContext();
  if (shape.lse && !v.hasRowSum()) {
    reportLseUnavailable(v, diags);
    return false;
  }
  // The kernel, and for masked variants its block-map function: the same
  // attention op with a block_map output, which computes only tile classes.
  auto build = [&](const std::string &name, bool withMap,
                   bool backward = false) -> bool {
  OpBuilder b(ctx);
  b.setInsertionPointToEnd(module.getBody());
  auto [line, col] = file.lineCol(v.loc.offset);
  Location loc = FileLineColLoc::get(ctx, file.name, line, col);

  mlir::Type qkvElt = elementType(ctx, shape.dtype);
  mlir::Type outElt = elementType(ctx, outputDType(v, shape));
  int64_t dyn = ShapedType::kDynamic;
  bool quant = shape.kvQuant != KVQuant::None;
  bool paged = shape.pageSize > 0;
  mlir::Type kvElt = quant ? mlir::Type(b.getI8Type()) : qkvElt;
  int64_t pack = shape.kvQuant == KVQuant::Int4 ? 2 : 1;
  SmallVector<mlir::Type> argTypes = {
      rowStridedType({dyn, dyn, dyn, shape.headDim}, qkvElt),
      rowStridedType({dyn, dyn, dyn, shape.headDim / pack}, kvElt),
      rowStridedType({dyn, dyn, dyn, shape.valueHeadDim / pack}, kvElt),
      rowStridedType({dyn, dyn, dyn, shape.valueHeadDim}, outElt)};
  SmallVector<std::string> names = {"q", "k", "v", "o"};
  // The backward reads the forward's lse whenever the normalizer has one.
  if (backward ? v.hasRowSum() : shape.lse) {
    argTypes.push_back(rowStridedType({dyn, dyn, dyn}, b.getF32Type()));
    names.push_back("lse");
  }
  size_t quantArgs = argTypes.size();
  if (quant) {
    argTypes.push_back(rowStridedType({dyn, dyn, dyn, shape.headDim},
                                      b.getF32Type()));
    argTypes.push_back(rowStridedType({dyn, dyn, dyn}, b.getF32Type()));
    names.append({"k_scale", "v_scale"});
  }
  size_t pageArgs = argTypes.size();
  if (paged) {
    argTypes.push_back(rowStridedType({dyn, dyn}, b.getI32Type()));
    argTypes.push_back(rowStridedType({dyn}, b.getI32Type()));
    names.append({"page_table", "seq_lens"});
  }
  size_t firstParam = argTypes.size();
  for (const ParamDecl &p : v.params)
    argTypes.push_back(p.type == fe::Type::I32 ? mlir::Type(b.getI32Type())
                                               : b.getF32Type());
  size_t firstCapture = argTypes.size();
  for (const TensorDecl &t : v.tensors) {
    SmallVector<int64_t> dims(t.dims.size(), dyn);
    argTypes.push_back(MemRefType::get(dims, elementType(ctx, t.dtype)));
  }
  size_t endCaptures = argTypes.size();
  // The backward: do, dq, dk, dv, the f32 params' and captures' gradients
  // and the phase.
  size_t gradArgs = argTypes.size();
  size_t numParamGrads = 0, numCaptureGrads = 0;
  if (backward) {
    argTypes.append({argTypes[3], argTypes[0], argTypes[1], argTypes[2]});
    names.append({"do", "dq", "dk", "dv"});
    for (const ParamDecl &p : v.params)
      if (p.type == fe::Type::F32) {
        argTypes.push_back(MemRefType::get({dyn}, b.getF32Type()));
        names.push_back("d" + p.name);
        ++numParamGrads;
      }
    for (const TensorDecl &t : v.tensors)
      if (t.dtype == DType::F32) {
        SmallVector<int64_t> dims(t.dims.size(), dyn);
        argTypes.push_back(MemRefType::get(dims, b.getF32Type()));
        names.push_back("d" + t.name);
        ++numCaptureGrads;
      }
    // select's choices, constants of the backward: the forward's block
    // map (Kernel::blockMap) read as tile classes.
    if (v.select) {
      argTypes.push_back(MemRefType::get({dyn, dyn, dyn, dyn}, b.getI8Type()));
      names.push_back("tile_classes");
    }
    argTypes.push_back(b.getI32Type());
    names.push_back("phase");
  }
  // Masked and selecting kernels read a block map (empty: classify on the
  // fly); their block-map functions write one.
  bool mapped = hasBlockMap(v) && !backward;
  if (mapped)
    argTypes.push_back(MemRefType::get({dyn, dyn, dyn, dyn}, b.getI8Type()));
  // Kernels split their key range on request (decode): the number of
  // parts, and where parts write when there are several.
  size_t splitArgs = argTypes.size();
  if (!withMap && !backward) {
    argTypes.push_back(b.getI32Type());
    argTypes.push_back(
        MemRefType::get({dyn, dyn, dyn, dyn, dyn}, b.getF32Type()));
    argTypes.push_back(MemRefType::get({dyn, dyn, dyn, dyn}, b.getF32Type()));
  }

  auto func = func::FuncOp::create(b, loc, name,
                                   b.getFunctionType(argTypes, {}));
  Block *entry = func.addEntryBlock();
  // Argument names make the IR readable and tie it back to the source.
  for (size_t i = 0; i < firstParam; ++i)
    func.setArgAttr(i, "attn.name", b.getStringAttr(names[i]));
  for (size_t i = 0; i < v.params.size(); ++i)
    func.setArgAttr(firstParam + i, "attn.name",
                    b.getStringAttr(v.params[i].name));
  for (size_t i = 0; i < v.tensors.size(); ++i)
    func.setArgAttr(firstCapture + i, "attn.name",
                    b.getStringAttr(v.tensors[i].name));
  if (mapped)
    func.setArgAttr(endCaptures, "attn.name",
                    b.getStringAttr(withMap ? "block_map" : "tile_classes"));
  for (size_t i = gradArgs; backward && i < splitArgs; ++i)
    func.setArgAttr(i, "attn.name",
                    b.getStringAttr(names[firstParam + (i - gradArgs)]));
  if (!withMap && !backward) {
    func.setArgAttr(splitArgs, "attn.name", b.getStringAttr("num_splits"));
    func.setArgAttr(splitArgs + 1, "attn.name", b.getStringAttr("o_part"));
    func.setArgAttr(splitArgs + 2, "attn.name", b.getStringAttr("lse_part"));
  }

  b.setInsertionPointToStart(entry);
  auto args = entry->getArguments();
  SmallVector<Value> params(args.begin() + firstParam,
                            args.begin() + firstCapture);
  SmallVector<Value> captures(args.begin() + firstCapture,
                              args.begin() + endCaptures);
  Value lse = (backward ? v.hasRowSum() : shape.lse) ? args[4] : Value();
  Value map = withMap ? args[endCaptures] : Value();
  Value classes = mapped && !withMap ? args[endCaptures]
                  : backward && v.select ? args[splitArgs - 2]
                                         : Value();
  auto op = mlir::attn::AttentionOp::create(
      b, loc, args[0], args[1], args[2], args[3], lse,
      quant ? args[quantArgs] : Value(), quant ? args[quantArgs + 1] : Value(),
      paged ? args[pageArgs] : Value(), paged ? args[pageArgs + 1] : Value(),
      v.kvIndexTensor >= 0 ? captures[v.kvIndexTensor] : Value(), map,
      classes,
      withMap || backward ? Value() : args[splitArgs],
      withMap || backward ? Value() : args[splitArgs + 1],
      withMap || backward ? Value() : args[splitArgs + 2], params, captures,
      backward ? args[gradArgs] : Value(),
      backward ? args[gradArgs + 1] : Value(),
      backward ? args[gradArgs + 2] : Value(),
      backward ? args[gradArgs + 3] : Value(),
      backward ? args.slice(gradArgs + 4, numParamGrads) : ValueRange(),
      backward ? args.slice(gradArgs + 4 + numParamGrads, numCaptureGrads)
               : ValueRange(),
      backward ? args[splitArgs - 1] : Value(),
      dialectNormalize(v.normalize), FloatAttr(),
      mlir::attn::SelectKindAttr(), IntegerAttr(), mlir::attn::KVQuantAttr(),
      IntegerAttr(), IntegerAttr());
  if (quant) {
    op.setKvQuantAttr(mlir::attn::KVQuantAttr::get(
        ctx, static_cast<mlir::attn::KVQuant>(
                 static_cast<int>(shape.kvQuant) - 1)));
    op.setKvGroupAttr(b.getI64IntegerAttr(shape.kvGroup));
  }
  if (paged)
    op.setPageSizeAttr(b.getI64IntegerAttr(shape.pageSize));
  func::ReturnOp::create(b, loc);

  auto newRegion = [&](Region &region, ArrayRef<mlir::Type> types) {
    SmallVector<Location> locs(types.size(), loc);
    return b.createBlock(&region, {}, types, locs);
  };
  mlir::Type i32 = b.getI32Type(), f32 = b.getF32Type();

  // Scale: a constant attribute when it folds, a region otherwise.
  if (!v.scale) {
    op.setScaleAttr(b.getF32FloatAttr(
        static_cast<float>(1.0 / std::sqrt(double(shape.headDim)))));
  } else {
    newRegion(op.getScaleExpr(), {});
    RegionEmitter em(b, v, shape, file, params, captures);
    Value s = em.emitRoot(*v.scale, fe::Type::F32);
    mlir::attn::YieldOp::create(b, loc, s);
    // Built with createOrFold and static D/Dv, a constant scale has folded
    // to one arith.constant: keep it as the attribute instead.
    APFloat constant(0.0f);
    if (matchPattern(s, m_ConstantFloat(&constant))) {
      op.getScaleExpr().getBlocks().clear();
      op.setScaleAttr(b.getF32FloatAttr(constant.convertToFloat()));
    }
  }

  if (v.score) {
    Block *blk = newRegion(op.getScore(), {f32, i32, i32, i32, i32});
    RegionEmitter em(b, v, shape, file, params, captures);
    em.bind(IndexVar::S, blk->getArgument(0));
    em.bind(IndexVar::B, blk->getArgument(1));
    em.bind(IndexVar::H, blk->getArgument(2));
    em.bind(IndexVar::Q, blk->getArgument(3));
    em.bind(IndexVar::KV, blk->getArgument(4));
    Value s = em.emitRoot(*v.score->body, fe::Type::F32);
    mlir::attn::YieldOp::create(b, loc, s);
  }
  if (v.mask) {
    Block *blk = newRegion(op.getMask(), {i32, i32, i32, i32});
    RegionEmitter em(b, v, shape, file, params, captures);
    em.bind(IndexVar::B, blk->getArgument(0));
    em.bind(IndexVar::H, blk->getArgument(1));
    em.bind(IndexVar::Q, blk->getArgument(2));
    em.bind(IndexVar::KV, blk->getArgument(3));
    Value m = em.emitRoot(*v.mask->body, fe::Type::Bool);
    mlir::attn::YieldOp::create(b, loc, m);
  }
  if (v.select) {
    op.setSelectAttr(mlir::attn::SelectKindAttr::get(
        ctx, static_cast<mlir::attn::SelectKind>(v.select->kind)));
    op.setSelectBlockAttr(b.getI64IntegerAttr(v.select->size));
    newRegion(op.getSelectArg(), {});
    RegionEmitter em(b, v, shape, file, params, captures);
    Value arg = em.emitRoot(*v.select->argument, fe::Type::F32);
    mlir::attn::YieldOp::create(b, loc, arg);
  }
  if (v.sink) {
    Block *blk = newRegion(op.getSink(), {i32});
    RegionEmitter em(b, v, shape, file, params, captures);
    em.bind(IndexVar::H, blk->getArgument(0));
    Value s = em.emitRoot(*v.sink->body, fe::Type::F32);
    mlir::attn::YieldOp::create(b, loc, s);
  }
  // createOrFold leaves the constants it folded away; drop the dead ones.
  for (Region &region : op->getRegions()) {
    if (region.empty())
      continue;
    Block &block = region.front();
    for (Operation &o : llvm::make_early_inc_range(llvm::reverse(block)))
      if (isOpTriviallyDead(&o))
        o.erase();
  }
  if (failed(verify(func))) {
    diags.error(v.loc, "internal error: the imported IR of variant '" +
                           v.name + "' does not verify");
    return false;
  }
  return true;
  };
  // The merge of split-KV parts: o and lse from the parts' results.
  auto buildMerge = [&]() {
    OpBuilder b(ctx);
    b.setInsertionPointToEnd(module.getBody());
    auto [line, col] = file.lineCol(v.loc.offset);
    Location loc = FileLineColLoc::get(ctx, file.name, line, col);
    int64_t dyn = ShapedType::kDynamic;
    SmallVector<mlir::Type> types = {
        MemRefType::get({dyn, dyn, dyn, dyn, dyn}, b.getF32Type()),
        MemRefType::get({dyn, dyn, dyn, dyn}, b.getF32Type()),
        rowStridedType({dyn, dyn, dyn, shape.valueHeadDim},
                       elementType(ctx, outputDType(v, shape)))};
    if (shape.lse)
      types.push_back(rowStridedType({dyn, dyn, dyn}, b.getF32Type()));
    auto func = func::FuncOp::create(b, loc, mergeFunctionName(v.name),
                                     b.getFunctionType(types, {}));
    Block *entry = func.addEntryBlock();
    b.setInsertionPointToStart(entry);
    auto a = entry->getArguments();
    mlir::attn::MergeSplitsOp::create(
        b, loc, a[0], a[1], a[2], shape.lse ? a[3] : Value(),
        dialectNormalize(v.normalize));
    func::ReturnOp::create(b, loc);
    return true;
  };
  if (shape.backward) {
    const char *unsupported = shape.kvQuant != KVQuant::None
                                  ? "quantized K/V"
                              : shape.pageSize > 0   ? "paged K/V"
                              : v.kvIndexTensor >= 0 ? "kv_index"
                                                     : nullptr;
    if (unsupported) {
      diags.error(v.loc, std::string("variant '") + v.name +
                             "' has no backward yet: " + unsupported +
                             " is forward-only (docs/backward.md)");
      return false;
    }
  }
  return build(v.name, false) &&
         (!hasBlockMap(v) || build(blockMapFunctionName(v.name), true)) &&
         buildMerge() &&
         (!shape.backward ||
          build(backwardFunctionName(v.name), false, /*backward=*/true));
}

} // namespace attn::fe
