//===- AttnOps.cpp - attn dialect operations -----------------------------===//
#include "dialect/AttnOps.h"
#include "dialect/Normalizers.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Transforms/RegionUtils.h"

#include "attn/IntMath.h"

using namespace mlir;
using namespace mlir::attn;

#define GET_OP_CLASSES
#include "dialect/AttnOps.cpp.inc"

//===----------------------------------------------------------------------===//
// AttentionOp
//===----------------------------------------------------------------------===//

static int64_t lastDim(Value v) {
  return cast<MemRefType>(v.getType()).getShape().back();
}

int64_t AttentionOp::getHeadDim() { return lastDim(getQuery()); }
int64_t AttentionOp::getValueHeadDim() { return lastDim(getOut()); }

bool AttentionOp::hasRowSum() { return attn::hasRowSum(getNormalize()); }

bool AttentionOp::foldsLog2eIntoScale() {
  return runsInLog2Domain(getNormalize()) && !hasScore();
}

LogicalResult AttentionOp::verify() {
  auto qType = cast<MemRefType>(getQuery().getType());
  auto kType = cast<MemRefType>(getKey().getType());
  auto vType = cast<MemRefType>(getValue().getType());
  if (ShapedType::isDynamic(getHeadDim()) ||
      ShapedType::isDynamic(lastDim(getKey())))
    return emitOpError("expected a static head dim D on q and k");
  if (ShapedType::isDynamic(getValueHeadDim()) ||
      ShapedType::isDynamic(lastDim(getValue())))
    return emitOpError("expected a static value head dim Dv on v and o");
  // int4 codes pack two per byte along the head dim.
  int64_t pack = getKvQuant() == KVQuant::int4 ? 2 : 1;
  if (getHeadDim() % pack || getValueHeadDim() % pack)
    return emitOpError("expected even head dims with int4 K/V");
  if (getHeadDim() / pack != lastDim(getKey()))
    return emitOpError() << "expected k's last dim to be "
                         << getHeadDim() / pack << ", got "
                         << lastDim(getKey());
  if (getValueHeadDim() / pack != lastDim(getValue()))
    return emitOpError() << "expected v's last dim to be "
                         << getValueHeadDim() / pack << ", got "
                         << lastDim(getValue());
  Type codeType = IntegerType::get(getContext(), 8);
  Type kvElt = getKvQuant() ? codeType : qType.getElementType();
  if (kType.getElementType() != kvElt || vType.getElementType() != kvElt)
    return emitOpError() << "expected k and v of element type " << kvElt
                         << ", got " << kType.getElementType() << " and "
                         << vType.getElementType();
  if (getKvQuant().has_value() != (getKeyScale() != nullptr) ||
      getKvQuant().has_value() != getKvGroup().has_value())
    return emitOpError("expected kv_scales and a group exactly with kv_quant");
  if (getKvGroup() && *getKvGroup() < 1)
    return emitOpError("expected a positive kv_quant group");
  if (getKeyScale() && lastDim(getKeyScale()) != getHeadDim() &&
      !ShapedType::isDynamic(lastDim(getKeyScale())))
    return emitOpError("expected k_scale's last dim to be D");
  if (isPaged() != (getPageTable() != nullptr))
    return emitOpError("expected pages(...) exactly with page_size");
  if (getPageSize() && *getPageSize() < 1)
    return emitOpError("expected a positive page_size");
  if (hasSelect() && getKvIndex())
    return emitOpError("select and kv_index both choose keys: expected "
                       "not both");
  if (getKvIndex() && (hasClassify() || getTileClasses() || getBlockMap()))
    return emitOpError("kv_index positions are data: expected no tile "
                       "classification with it");
  Normalize norm = getNormalize();
  if (getLse() && !hasRowSum())
    return emitOpError() << "expected no lse output with normalize = "
                         << stringifyNormalize(norm)
                         << " (lse exists for " << rowSumNormalizerNames()
                         << " only)";
  if (hasSink() && !allowsSink(norm))
    return emitOpError() << "expected normalize = softmax with a sink, got "
                         << stringifyNormalize(norm);
  if (hasSelect() != !getSelectArg().empty())
    return emitOpError("expected a select_arg region exactly with select");
  if (hasSelect() && (!getSelectBlock() || *getSelectBlock() < 1))
    return emitOpError("expected a positive select block size");
  if (getScale() && hasScaleExpr())
    return emitOpError("expected either a scale attribute or a scale_expr "
                       "region, got both");
  return verifyBackwardOperands();
}

LogicalResult AttentionOp::verifyBackwardOperands() {
  if (!isBackward()) {
    if (getPhase() || !getParamGrads().empty() || !getCaptureGrads().empty())
      return emitOpError("expected phase, param_grads and capture_grads "
                         "only with backward");
    return success();
  }
  if (!getPhase())
    return emitOpError("expected a phase with backward");
  if (getKvQuant() || isPaged() || getKvIndex() || getBlockMap() ||
      getNumSplits())
    return emitOpError("expected no kv_quant, pages, kv_index, block_map or "
                       "splits with backward");
  if (hasSelect() && !getTileClasses())
    return emitOpError("expected the forward's tile_classes with select and "
                       "backward (select's choices are constants of the "
                       "backward)");
  if (hasRowSum() != (getLse() != nullptr))
    return emitOpError("expected the forward's lse with backward exactly "
                       "when the normalizer has a row sum");
  auto sameType = [](Value a, Value b) { return a.getType() == b.getType(); };
  if (!sameType(getGradOut(), getOut()) ||
      !sameType(getGradQuery(), getQuery()) ||
      !sameType(getGradKey(), getKey()) || !sameType(getGradValue(), getValue()))
    return emitOpError("expected do, dq, dk and dv of the types of o, q, k "
                       "and v");
  size_t f32Params = llvm::count_if(
      getParams(), [](Value p) { return p.getType().isF32(); });
  if (getParamGrads().size() != f32Params)
    return emitOpError() << "expected one param gradient per f32 param ("
                         << f32Params << "), got "
                         << getParamGrads().size();
  for (Value g : getParamGrads())
    if (cast<MemRefType>(g.getType()).getRank() != 1)
      return emitOpError("expected rank-1 param gradients");
  SmallVector<Value> f32Captures;
  for (Value c : getCaptures())
    if (cast<MemRefType>(c.getType()).getElementType().isF32())
      f32Captures.push_back(c);
  if (getCaptureGrads().size() != f32Captures.size())
    return emitOpError() << "expected one gradient per f32 captured tensor ("
                         << f32Captures.size() << "), got "
                         << getCaptureGrads().size();
  for (auto [c, g] : llvm::zip(f32Captures, getCaptureGrads()))
    if (cast<MemRefType>(c.getType()).getRank() !=
        cast<MemRefType>(g.getType()).getRank())
      return emitOpError("expected each captured tensor's gradient to have "
                         "its rank");
  return success();
}

/// Checks a region's block signature and its yielded type.
static LogicalResult verifyRegionSignature(AttentionOp op, Region &region,
                                           StringRef name,
                                           ArrayRef<Type> argTypes,
                                           Type yieldType, StringRef argHint) {
  if (region.empty())
    return success();
  Block &block = region.front();
  if (block.getArgumentTypes() != TypeRange(argTypes))
    return op.emitOpError()
           << "expected " << name << " region arguments " << argHint
           << ", got " << block.getNumArguments() << " arguments ("
           << block.getArgumentTypes() << ")";
  auto yield = dyn_cast<YieldOp>(block.getTerminator());
  if (!yield)
    return op.emitOpError() << "expected " << name
                            << " region to end with attn.yield";
  // A null yieldType: the region yields nothing.
  if (!yieldType && !yield.getValues().empty())
    return op.emitOpError() << "expected " << name
                            << " region to yield nothing, got ("
                            << yield.getValues().getTypes() << ")";
  if (yieldType && (yield.getValues().size() != 1 ||
                    yield.getValues().front().getType() != yieldType))
    return op.emitOpError() << "expected " << name << " region to yield one "
                            << yieldType << ", got ("
                            << yield.getValues().getTypes() << ")";
  return success();
}

LogicalResult AttentionOp::verifyRegions() {
  MLIRContext *ctx = getContext();
  Type f32 = Float32Type::get(ctx);
  Type i32 = IntegerType::get(ctx, 32);
  Type i1 = IntegerType::get(ctx, 1);
  if (failed(verifyRegionSignature(*this, getScaleExpr(), "scale_expr", {},
                                   f32, "()")) ||
      failed(verifyRegionSignature(*this, getScore(), "score",
                                   {f32, i32, i32, i32, i32}, f32,
                                   "(s: f32, b, h, q, kv: i32)")) ||
      failed(verifyRegionSignature(*this, getMask(), "mask",
                                   {i32, i32, i32, i32}, i1,
                                   "(b, h, q, kv: i32); a mask must not read "
                                   "the score")) ||
      failed(verifyRegionSignature(*this, getSink(), "sink", {i32}, f32,
                                   "(h: i32)")) ||
      failed(verifyRegionSignature(*this, getSelectArg(), "select_arg", {},
                                   f32, "()")) ||
      failed(verifyRegionSignature(
          *this, getClassify(), "classify", {i32, i32, i32, i32, i32, i32, i32},
          i32, "(b, h_lo, h_hi, q_lo, q_hi, kv_lo, kv_hi: i32)")) ||
      failed(verifyRegionSignature(*this, getScoreGrad(), "score_grad",
                                   {f32, i32, i32, i32, i32, f32}, f32,
                                   "(s: f32, b, h, q, kv: i32, g: f32)")) ||
      failed(verifyRegionSignature(*this, getSinkGrad(), "sink_grad",
                                   {i32, f32}, Type(), "(h: i32, g: f32)")) ||
      failed(verifyRegionSignature(*this, getScaleGrad(), "scale_grad", {f32},
                                   Type(), "(g: f32)")))
    return failure();
  // Gradients are taken of regions that exist.
  if ((!getSinkGrad().empty() && !hasSink()) ||
      (!getScaleGrad().empty() && !hasScaleExpr()) ||
      (!getScoreGrad().empty() && !hasScore()))
    return emitOpError("expected score_grad, sink_grad and scale_grad only "
                       "with the score, sink and scale_expr regions they "
                       "differentiate");

  // Regions see only the op's params and captures (and constants) from
  // outside, so the tiling pass can inline them anywhere those dominate.
  llvm::SmallPtrSet<Value, 8> allowed;
  for (Value v : getParams())
    allowed.insert(v);
  for (Value v : getCaptures())
    allowed.insert(v);
  for (Region *region : getRegions()) {
    llvm::SetVector<Value> used;
    getUsedValuesDefinedAbove(*region, used);
    for (Value v : used)
      // Constants may be hoisted out of the regions by canonicalization.
      if (!allowed.contains(v) &&
          !(v.getDefiningOp() &&
            v.getDefiningOp()->hasTrait<OpTrait::ConstantLike>()))
        return emitOpError()
               << "expected regions to use only the op's params, captures "
                  "and constants from above, got a use of "
               << v;
  }
  return success();
}

void AttentionOp::getAsmBlockArgumentNames(Region &region,
                                           OpAsmSetValueNameFn setNameFn) {
  if (region.empty())
    return;
  static const char *scoreNames[] = {"s", "b", "h", "q", "kv"};
  static const char *maskNames[] = {"b", "h", "q", "kv"};
  static const char *sinkNames[] = {"h"};
  static const char *classifyNames[] = {"b",    "h_lo",  "h_hi", "q_lo",
                                        "q_hi", "kv_lo", "kv_hi"};
  static const char *scoreGradNames[] = {"s", "b", "h", "q", "kv", "g"};
  static const char *sinkGradNames[] = {"h", "g"};
  static const char *scaleGradNames[] = {"g"};
  ArrayRef<const char *> names;
  if (&region == &getScore())
    names = scoreNames;
  else if (&region == &getScoreGrad())
    names = scoreGradNames;
  else if (&region == &getSinkGrad())
    names = sinkGradNames;
  else if (&region == &getScaleGrad())
    names = scaleGradNames;
  else if (&region == &getMask())
    names = maskNames;
  else if (&region == &getSink())
    names = sinkNames;
  else if (&region == &getClassify())
    names = classifyNames;
  for (auto [arg, name] : llvm::zip(region.front().getArguments(), names))
    setNameFn(arg, name);
}

void DimOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getResult(), stringifySize(getSize()));
}

//===----------------------------------------------------------------------===//
// LoadOp
//===----------------------------------------------------------------------===//

LogicalResult LoadOp::verify() {
  int64_t rank = getTensor().getType().getRank();
  if (static_cast<int64_t>(getIndices().size()) != rank)
    return emitOpError() << "expected " << rank << " indices for a rank-"
                         << rank << " tensor, got " << getIndices().size();
  return success();
}

//===----------------------------------------------------------------------===//
// AccumulateGradOp
//===----------------------------------------------------------------------===//

LogicalResult AccumulateGradOp::verify() {
  auto attention = (*this)->getParentOfType<AttentionOp>();
  Region *region = (*this)->getParentRegion();
  if (!attention || (region != &attention.getScoreGrad() &&
                     region != &attention.getSinkGrad() &&
                     region != &attention.getScaleGrad()))
    return emitOpError("expected to be in a score_grad, sink_grad or "
                       "scale_grad region of attn.attention");
  Value target = getTarget();
  if (llvm::is_contained(attention.getParams(), target)) {
    if (!target.getType().isF32() || !getIndices().empty())
      return emitOpError("expected an f32 param and no indices");
    return success();
  }
  if (!llvm::is_contained(attention.getCaptures(), target))
    return emitOpError("expected the target to be one of the op's params "
                       "or captured tensors");
  auto type = cast<MemRefType>(target.getType());
  if (!type.getElementType().isF32())
    return emitOpError() << "expected an f32 captured tensor, got " << type;
  if (static_cast<int64_t>(getIndices().size()) != type.getRank())
    return emitOpError() << "expected " << type.getRank()
                         << " indices for a rank-" << type.getRank()
                         << " tensor, got " << getIndices().size();
  return success();
}

//===----------------------------------------------------------------------===//
// FloorDivOp / FloorModOp
//===----------------------------------------------------------------------===//


template <typename Fn>
static OpFoldResult foldIntBinary(Attribute lhs, Attribute rhs, Type type,
                                  Fn fn) {
  auto l = dyn_cast_if_present<IntegerAttr>(lhs);
  auto r = dyn_cast_if_present<IntegerAttr>(rhs);
  if (!l || !r)
    return {};
  return IntegerAttr::get(type, fn(static_cast<int32_t>(l.getInt()),
                                   static_cast<int32_t>(r.getInt())));
}

OpFoldResult FloorDivOp::fold(FoldAdaptor adaptor) {
  return foldIntBinary(adaptor.getLhs(), adaptor.getRhs(), getType(),
                       ::attn::floorDiv);
}

OpFoldResult FloorModOp::fold(FoldAdaptor adaptor) {
  return foldIntBinary(adaptor.getLhs(), adaptor.getRhs(), getType(),
                       ::attn::floorMod);
}
