//===- GpuKernel.cpp - what NVIDIA and AMD attention kernels share --------===//
#include "lib/Target/GPU/GpuKernel.h"

#include "lib/Transforms/MergeSplits.h"
#include "lib/Transforms/TileWalk.h"
#include "lib/Transforms/RowState.h"
#include "lib/Transforms/SelectBlocks.h"
#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Math/Transforms/Approximation.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Matchers.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#include "llvm/ADT/TypeSwitch.h"

#include <cmath>

using namespace mlir;
using namespace mlir::attn;
using namespace mlir::attn::gpukernel;

namespace {
constexpr double kLog2E = 1.4426950408889634;
} // namespace

KernelSignature gpukernel::kernelSignature(AttentionOp op) {
  KernelSignature s;
  s.opValues = {op.getQuery(), op.getKey(), op.getValue(), op.getOut()};
  if (op.getLse())
    s.opValues.push_back(op.getLse());
  s.opValues.append(op.getParams().begin(), op.getParams().end());
  s.opValues.append(op.getCaptures().begin(), op.getCaptures().end());
  if (op.getKvQuant()) {
    s.opValues.push_back(op.getKeyScale());
    s.opValues.push_back(op.getValueScale());
  }
  if (op.isPaged()) {
    s.opValues.push_back(op.getPageTable());
    s.opValues.push_back(op.getSeqLens());
  }
  for (Value v : s.opValues)
    s.types.push_back(v.getType());
  MLIRContext *ctx = op.getContext();
  Type f32 = Float32Type::get(ctx), i32 = IntegerType::get(ctx, 32);
  int64_t dyn = ShapedType::kDynamic;
  if (op.hasSelect())
    s.types.push_back(
        MemRefType::get({dyn, dyn, dyn, dyn}, IntegerType::get(ctx, 8)));
  s.types.push_back(
      MemRefType::get({dyn, dyn, dyn, dyn, op.getValueHeadDim()}, f32));
  s.types.push_back(MemRefType::get({dyn, dyn, dyn, dyn}, f32));
  s.types.push_back(i32); // parts
  s.types.push_back(i32); // GQA heads packed per CTA
  return s;
}

LogicalResult gpukernel::checkSupported(AttentionOp op, StringRef units,
                                        std::string &error) {
  int64_t D = op.getHeadDim(), Dv = op.getValueHeadDim();
  Type elt = cast<MemRefType>(op.getQuery().getType()).getElementType();
  if (!isa<BFloat16Type, Float16Type>(elt)) {
    error = (units + " take f16 or bf16 inputs; compile with --dtype bf16 "
                     "or --dtype f16 for GPU targets")
                .str();
    return failure();
  }
  if (D % 16 || Dv % 16 || D > 256 || Dv > 256) {
    error = "GPU kernels support head dims that are multiples of 16 up to "
            "256 (got D = " + std::to_string(D) + ", Dv = " +
            std::to_string(Dv) + ")";
    return failure();
  }
  return success();
}

gpu::GPUFuncOp gpukernel::createKernelFunc(OpBuilder &b, AttentionOp op,
                                           StringRef name,
                                           ArrayRef<Type> types,
                                           ArrayRef<Value> opValues,
                                           int32_t threads,
                                           IRMapping &outside) {
  auto func = gpu::GPUFuncOp::create(b, op.getLoc(), name,
                                     b.getFunctionType(types, {}));
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), b.getUnitAttr());
  func.setKnownBlockSizeAttr(b.getDenseI32ArrayAttr({threads, 1, 1}));
  for (auto [value, arg] : llvm::zip(opValues, func.getArguments()))
    outside.map(value, arg);
  return func;
}

gpu::GPUFuncOp gpukernel::buildMergeKernel(OpBuilder &b, AttentionOp op,
                                           StringRef name) {
  Location loc = op.getLoc();
  FloatType f32 = b.getF32Type();
  int64_t Dv = op.getValueHeadDim();
  int64_t dyn = ShapedType::kDynamic;
  Value outArg = op.getOut();
  SmallVector<Type> argTypes = {
      MemRefType::get({dyn, dyn, dyn, dyn, Dv}, f32),
      MemRefType::get({dyn, dyn, dyn, dyn}, f32), outArg.getType()};
  if (op.getLse())
    argTypes.push_back(op.getLse().getType());
  auto func =
      gpu::GPUFuncOp::create(b, loc, name, b.getFunctionType(argTypes, {}));
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), b.getUnitAttr());
  func.setKnownBlockSizeAttr(
      b.getDenseI32ArrayAttr({int32_t(kMergeThreads), 1, 1}));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(&func.getBody().front());
  auto cIdx = [&](int64_t v) {
    return arith::ConstantIndexOp::create(b, loc, v).getResult();
  };
  Value oPart = func.getArgument(0), lsePart = func.getArgument(1),
        o = func.getArgument(2);
  Value lse = op.getLse() ? func.getArgument(3) : Value();
  Value tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
  Value x = arith::AddIOp::create(
      b, loc,
      arith::MulIOp::create(b, loc,
                            gpu::BlockIdOp::create(b, loc, gpu::Dimension::x),
                            cIdx(kMergeThreads)),
      tid);
  Value hIdx = gpu::BlockIdOp::create(b, loc, gpu::Dimension::y);
  Value bIdx = gpu::BlockIdOp::create(b, loc, gpu::Dimension::z);
  Value seqQ = memref::DimOp::create(b, loc, o, 2);
  Value numParts = memref::DimOp::create(b, loc, oPart, 0);
  Value qi = arith::DivUIOp::create(b, loc, x, cIdx(Dv));
  Value col = arith::RemUIOp::create(b, loc, x, cIdx(Dv));
  Value inside =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, qi, seqQ);
  scf::IfOp::create(b, loc, inside, [&](OpBuilder &b, Location) {
    auto partLse = [&](OpBuilder &b, Value p) -> Value {
      return memref::LoadOp::create(b, loc, lsePart,
                                    ValueRange{p, bIdx, hIdx, qi});
    };
    auto partO = [&](OpBuilder &b, Value p) -> Value {
      return memref::LoadOp::create(b, loc, oPart,
                                    ValueRange{p, bIdx, hIdx, qi, col});
    };
    SplitParts splitParts{numParts, partLse, partO};
    MergeRow row = emitMergeRow(b, loc, op.getNormalize(), splitParts);
    auto storeLse = [&](OpBuilder &b, Value rowLse) {
      memref::StoreOp::create(b, loc, rowLse, lse, ValueRange{bIdx, hIdx, qi});
    };
    emitMergeColumn(
        b, loc, row, splitParts, col,
        cast<MemRefType>(o.getType()).getElementType(),
        [&](OpBuilder &b, Value result) {
          memref::StoreOp::create(b, loc, result, o,
                                  ValueRange{bIdx, hIdx, qi, col});
        },
        lse ? function_ref<void(OpBuilder &, Value)>(storeLse) : nullptr);
    scf::YieldOp::create(b, loc);
  });
  gpu::ReturnOp::create(b, loc);
  return func;
}

namespace {

/// How an i32 value of a mask region moves as the query position grows.
enum class Trend { Constant, Rising, Falling, Unknown };

Trend combine(Trend a, Trend b) {
  if (a == Trend::Constant)
    return b;
  if (b == Trend::Constant || a == b)
    return a;
  return Trend::Unknown;
}

Trend opposite(Trend t) {
  return t == Trend::Rising    ? Trend::Falling
         : t == Trend::Falling ? Trend::Rising
                               : t;
}

Trend trendInQuery(Value v, Value query, Region &region) {
  if (v == query)
    return Trend::Rising;
  Operation *def = v.getDefiningOp();
  // Other positions, params and values from outside the region.
  if (!def || !region.isAncestor(def->getParentRegion()))
    return Trend::Constant;
  if (isa<arith::AddIOp>(def))
    return combine(trendInQuery(def->getOperand(0), query, region),
                   trendInQuery(def->getOperand(1), query, region));
  if (isa<arith::SubIOp>(def))
    return combine(trendInQuery(def->getOperand(0), query, region),
                   opposite(trendInQuery(def->getOperand(1), query, region)));
  if (isa<arith::ExtSIOp, arith::ExtUIOp, arith::TruncIOp,
          arith::IndexCastOp>(def))
    return trendInQuery(def->getOperand(0), query, region);
  Trend t = Trend::Constant;
  for (Value operand : def->getOperands())
    if (trendInQuery(operand, query, region) != Trend::Constant)
      t = Trend::Unknown;
  return t;
}

bool keptGrowsWithQuery(Value kept, Value query, Region &region) {
  Operation *def = kept.getDefiningOp();
  if (isa_and_nonnull<arith::AndIOp, arith::OrIOp>(def))
    return keptGrowsWithQuery(def->getOperand(0), query, region) &&
           keptGrowsWithQuery(def->getOperand(1), query, region);
  if (auto cmp = dyn_cast_or_null<arith::CmpIOp>(def)) {
    Trend lhs = trendInQuery(cmp.getLhs(), query, region),
          rhs = trendInQuery(cmp.getRhs(), query, region);
    auto is = [](Trend t, Trend want) {
      return t == Trend::Constant || t == want;
    };
    switch (cmp.getPredicate()) {
    case arith::CmpIPredicate::slt: case arith::CmpIPredicate::sle:
    case arith::CmpIPredicate::ult: case arith::CmpIPredicate::ule:
      return is(lhs, Trend::Falling) && is(rhs, Trend::Rising);
    case arith::CmpIPredicate::sgt: case arith::CmpIPredicate::sge:
    case arith::CmpIPredicate::ugt: case arith::CmpIPredicate::uge:
      return is(lhs, Trend::Rising) && is(rhs, Trend::Falling);
    default:
      return lhs == Trend::Constant && rhs == Trend::Constant;
    }
  }
  return trendInQuery(kept, query, region) == Trend::Constant;
}

Value f32Constant(OpBuilder &b, Location loc, double v) {
  return arith::ConstantFloatOp::create(b, loc, b.getF32Type(),
                                        APFloat(static_cast<float>(v)));
}

} // namespace

bool gpukernel::maskGrowsWithQuery(AttentionOp op) {
  if (!op.hasMask())
    return true;
  Region &mask = op.getMask();
  Block &body = mask.front();
  auto yield = dyn_cast<mlir::attn::YieldOp>(body.getTerminator());
  if (!yield || body.getNumArguments() != 4)
    return false;
  // Arguments (b, h, q, kv).
  return keptGrowsWithQuery(yield.getOperand(0), body.getArgument(2), mask);
}

void gpukernel::lowerExpTanhSigmoid(ModuleOp host, StringRef rcp) {
  // 1 / x by the hardware's approximate reciprocal (1 ulp); x here is
  // >= 1, +inf (-> 0) or NaN, so flushing subnormals never applies.
  auto reciprocal = [&](OpBuilder &b, Location loc, Value x) {
    return LLVM::CallIntrinsicOp::create(b, loc, b.getF32Type(),
                                         b.getStringAttr(rcp), ValueRange{x})
        .getResult(0);
  };
  SmallVector<Operation *> ops;
  host.walk([&](Operation *op) {
    if (isa<math::ExpOp, math::TanhOp>(op) &&
        op->getResult(0).getType().isF32())
      ops.push_back(op);
  });
  for (Operation *op : ops) {
    OpBuilder b(op);
    Location loc = op->getLoc();
    Value x = op->getOperand(0), y;
    if (isa<math::ExpOp>(op)) {
      double factor = kLog2E;
      if (auto neg = x.getDefiningOp<arith::NegFOp>()) {
        x = neg.getOperand();
        factor = -kLog2E;
      }
      y = arith::MulFOp::create(b, loc, x, f32Constant(b, loc, factor));
      op->getResult(0).replaceAllUsesWith(math::Exp2Op::create(b, loc, y));
      op->erase();
      continue;
    }
    if (auto div = x.getDefiningOp<arith::DivFOp>()) {
      // The factor where the divisor is defined, outside the key loop
      // (LLVM's LICM leaves it in sm_90a's loop).
      Value c = div.getRhs();
      OpBuilder at(b.getContext());
      if (Operation *def = c.getDefiningOp())
        at.setInsertionPointAfter(def);
      else
        at.setInsertionPointToStart(cast<BlockArgument>(c).getOwner());
      Value factor = arith::DivFOp::create(
          at, loc, f32Constant(at, loc, 2 * kLog2E), c);
      y = arith::MulFOp::create(b, loc, div.getLhs(), factor);
    } else
      y = arith::MulFOp::create(b, loc, x, f32Constant(b, loc, 2 * kLog2E));
    Value one = f32Constant(b, loc, 1.0);
    Value r = reciprocal(
        b, loc,
        arith::AddFOp::create(b, loc, one, math::Exp2Op::create(b, loc, y)));
    op->getResult(0).replaceAllUsesWith(
        math::FmaOp::create(b, loc, r, f32Constant(b, loc, -2.0), one));
    op->erase();
  }
  SmallVector<arith::DivFOp> reciprocals;
  host.walk([&](arith::DivFOp div) {
    auto sum = div.getRhs().getDefiningOp<arith::AddFOp>();
    if (!div.getType().isF32() || !matchPattern(div.getLhs(), m_OneFloat()) ||
        !sum)
      return;
    for (auto [one, e] : {std::pair(sum.getLhs(), sum.getRhs()),
                          std::pair(sum.getRhs(), sum.getLhs())})
      if (matchPattern(one, m_OneFloat()) && e.getDefiningOp<math::Exp2Op>()) {
        reciprocals.push_back(div);
        return;
      }
  });
  for (arith::DivFOp div : reciprocals) {
    OpBuilder b(div);
    div.getResult().replaceAllUsesWith(
        reciprocal(b, div.getLoc(), div.getRhs()));
    div.erase();
  }
}

LogicalResult gpukernel::prepareMath(ModuleOp host,
                                     const MathIntrinsics &intrinsics) {
  MLIRContext *ctx = host.getContext();
  {
    RewritePatternSet patterns(ctx);
    math::populateExpansionPatterns(patterns, {"tan", "sinh", "cosh", "asinh",
                                               "acosh", "atanh", "powf",
                                               "fpowi"});
    if (failed(applyPatternsGreedily(host, std::move(patterns))))
      return failure();
  }
  {
    RewritePatternSet patterns(ctx);
    populateMathPolynomialApproximationPatterns(patterns, [](StringRef name) {
      return llvm::is_contained(
          {math::ExpOp::getOperationName(), math::ExpM1Op::getOperationName(),
           math::LogOp::getOperationName(), math::Log1pOp::getOperationName(),
           math::TanhOp::getOperationName(), math::ErfOp::getOperationName(),
           math::AtanOp::getOperationName(),
           math::Atan2Op::getOperationName()},
          name);
    });
    if (failed(applyPatternsGreedily(host, std::move(patterns))))
      return failure();
  }
  auto isScalarMath = [](Operation *op) {
    return isa<math::Exp2Op, math::Log2Op, math::RsqrtOp, math::SqrtOp,
               math::FloorOp, math::CeilOp, math::AbsFOp, math::FmaOp,
               math::RoundEvenOp, math::RoundOp, math::TruncOp,
               math::CopySignOp>(op);
  };
  // 1-D f32 vectors of these ops go element by element (the GPU math
  // lowering would call libdevice for them).
  SmallVector<Operation *> vectorOps;
  host.walk([&](Operation *op) {
    auto type = op->getNumResults() == 1
                    ? dyn_cast<VectorType>(op->getResult(0).getType())
                    : VectorType();
    if (isScalarMath(op) && type && type.getRank() == 1 &&
        type.getElementType().isF32() && !type.isScalable())
      vectorOps.push_back(op);
  });
  for (Operation *op : vectorOps) {
    OpBuilder b(op);
    auto type = cast<VectorType>(op->getResult(0).getType());
    SmallVector<Value> lanes;
    for (int64_t i = 0; i < type.getNumElements(); ++i) {
      SmallVector<Value> operands;
      for (Value x : op->getOperands())
        operands.push_back(vector::ExtractOp::create(b, op->getLoc(), x, i));
      OperationState state(op->getLoc(), op->getName());
      state.addOperands(operands);
      state.addTypes(type.getElementType());
      state.addAttributes(op->getAttrs());
      lanes.push_back(b.create(state)->getResult(0));
    }
    op->getResult(0).replaceAllUsesWith(
        vector::FromElementsOp::create(b, op->getLoc(), type, lanes));
    op->erase();
  }
  SmallVector<Operation *> ops;
  host.walk([&](Operation *op) {
    if (isScalarMath(op) && op->getResult(0).getType().isF32())
      ops.push_back(op);
  });
  for (Operation *op : ops) {
    StringRef intrinsic =
        llvm::TypeSwitch<Operation *, StringRef>(op)
            .Case([&](math::Exp2Op) { return intrinsics.exp2; })
            .Case([&](math::Log2Op) { return intrinsics.log2; })
            .Case([&](math::RsqrtOp) { return intrinsics.rsqrt; })
            .Case([](math::SqrtOp) { return "llvm.sqrt.f32"; })
            .Case([](math::FloorOp) { return "llvm.floor.f32"; })
            .Case([](math::CeilOp) { return "llvm.ceil.f32"; })
            .Case([](math::FmaOp) { return "llvm.fma.f32"; })
            .Case([](math::RoundEvenOp) { return "llvm.roundeven.f32"; })
            .Case([](math::RoundOp) { return "llvm.round.f32"; })
            .Case([](math::TruncOp) { return "llvm.trunc.f32"; })
            .Case([](math::CopySignOp) { return "llvm.copysign.f32"; })
            .Default([](Operation *) { return "llvm.fabs.f32"; });
    OpBuilder b(op);
    auto call = LLVM::CallIntrinsicOp::create(
        b, op->getLoc(), b.getF32Type(), b.getStringAttr(intrinsic),
        op->getOperands());
    op->getResult(0).replaceAllUsesWith(call.getResult(0));
    op->erase();
  }
  return success();
}

void gpukernel::foldKnownBlockDims(ModuleOp host) {
  SmallVector<gpu::BlockDimOp> dims;
  host.walk([&](gpu::BlockDimOp op) { dims.push_back(op); });
  for (gpu::BlockDimOp op : dims) {
    auto func = op->getParentOfType<gpu::GPUFuncOp>();
    std::optional<ArrayRef<int32_t>> known =
        func ? func.getKnownBlockSize() : std::nullopt;
    if (!known)
      continue;
    OpBuilder b(op);
    int64_t size = (*known)[static_cast<unsigned>(op.getDimension())];
    op.replaceAllUsesWith(
        arith::ConstantIndexOp::create(b, op.getLoc(), size).getResult());
    op.erase();
  }
}

FailureOr<std::string> gpukernel::runToBinary(PassManager &pm, ModuleOp host,
                                              StringRef what,
                                              std::string &error) {
  std::string diagnostics;
  {
    ScopedDiagnosticHandler handler(host.getContext(), [&](Diagnostic &d) {
      llvm::raw_string_ostream os(diagnostics);
      os << d << "\n";
      return success();
    });
    if (failed(pm.run(host))) {
      error = ("lowering to " + what + " failed: ").str() + diagnostics;
      return failure();
    }
  }
  std::string out;
  host.walk([&](gpu::BinaryOp binary) {
    for (Attribute object : binary.getObjects())
      if (auto o = dyn_cast<gpu::ObjectAttr>(object))
        out = o.getObject().str();
  });
  if (out.empty()) {
    error = ("lowering to " + what + " produced nothing").str();
    return failure();
  }
  return out;
}

//===----------------------------------------------------------------------===//
// KernelBase
//===----------------------------------------------------------------------===//

KernelBase::KernelBase(AttentionOp op, IRMapping outside, int64_t rowsPerBlock,
                       int64_t blockKV)
    : op(op), loc(op.getLoc()), regions(op, outside), outside(outside),
      D(op.getHeadDim()), Dv(op.getValueHeadDim()), BQ(rowsPerBlock),
      BK(blockKV), norm(op.getNormalize()), quant(op.getKvQuant()) {}

Value KernelBase::cIdx(OpBuilder &b, int64_t v) {
  return arith::ConstantIndexOp::create(b, loc, v);
}
Value KernelBase::cI32(OpBuilder &b, int64_t v) {
  return arith::ConstantIntOp::create(b, loc, v, 32);
}
Value KernelBase::cF32(OpBuilder &b, double v) {
  return arith::ConstantFloatOp::create(b, loc, b.getF32Type(),
                                        APFloat(static_cast<float>(v)));
}
Value KernelBase::toI32(OpBuilder &b, Value index) {
  return arith::IndexCastOp::create(b, loc, b.getI32Type(), index);
}
Value KernelBase::add(OpBuilder &b, Value x, int64_t c) {
  return c == 0 ? x : arith::AddIOp::create(b, loc, x, cIdx(b, c)).getResult();
}

void KernelBase::setUp(OpBuilder &b, gpu::GPUFuncOp func, int64_t extraArgs) {
  q = outside.lookup(op.getQuery());
  k = outside.lookup(op.getKey());
  v = outside.lookup(op.getValue());
  o = outside.lookup(op.getOut());
  lse = op.getLse() ? outside.lookup(op.getLse()) : Value();
  elt = cast<MemRefType>(q.getType()).getElementType();
  if (quant) {
    kScale = outside.lookup(op.getKeyScale());
    vScale = outside.lookup(op.getValueScale());
  }
  // (The body's block arguments go on with workgroup attributions.)
  ValueRange args = func.getArguments().take_front(
      func.getFunctionType().getNumInputs());
  ValueRange splitArgs = args.drop_back(extraArgs).take_back(4);
  oPart = splitArgs[0];
  lsePart = splitArgs[1];
  if (op.hasSelect())
    keptMap = args.drop_back(extraArgs).take_back(5).front();
  auto positive = [&](Value x) {
    return arith::IndexCastUIOp::create(
        b, loc, b.getIndexType(),
        arith::MaxUIOp::create(b, loc, x, cI32(b, 1)));
  };
  parts = positive(splitArgs[2]);
  // The kept map is per query head: select never packs heads.
  packedHeads = keptMap ? cIdx(b, 1) : positive(splitArgs[3]);
  rowsPerHead = arith::DivUIOp::create(b, loc, cIdx(b, BQ), packedHeads);

  // Split-KV: blockIdx.x = query tile * parts + part; in clusters of C
  // CTAs, (query tile / C * parts + part) * C + query tile % C, so that a
  // cluster's CTAs share a part (the runtime rounds the query tiles up to
  // a multiple of C).
  Value blockX = gpu::BlockIdOp::create(b, loc, gpu::Dimension::x);
  Value qTile;
  if (clusterCtas > 1) {
    Value c = cIdx(b, clusterCtas);
    Value cluster = arith::DivUIOp::create(b, loc, blockX, c);
    clusterFirstTile = arith::MulIOp::create(
        b, loc, arith::DivUIOp::create(b, loc, cluster, parts), c);
    qTile = arith::AddIOp::create(b, loc, clusterFirstTile,
                                  arith::RemUIOp::create(b, loc, blockX, c));
    part = arith::RemUIOp::create(b, loc, cluster, parts);
  } else {
    qTile = arith::DivUIOp::create(b, loc, blockX, parts);
    part = arith::RemUIOp::create(b, loc, blockX, parts);
  }
  // The first of the CTA's query heads (grid y = Hq / pack).
  hIdx = arith::MulIOp::create(
      b, loc, gpu::BlockIdOp::create(b, loc, gpu::Dimension::y), packedHeads);
  bIdx = gpu::BlockIdOp::create(b, loc, gpu::Dimension::z);

  Value batch = memref::DimOp::create(b, loc, q, 0);
  Value headsQ = memref::DimOp::create(b, loc, q, 1);
  seqQ = memref::DimOp::create(b, loc, q, 2);
  Value headsKV = memref::DimOp::create(b, loc, k, 1);
  if (op.isPaged()) {
    pageTable = outside.lookup(op.getPageTable());
    seqLens = outside.lookup(op.getSeqLens());
    // Captures and scales are sized by the table's capacity.
    seqKV = arith::MulIOp::create(b, loc,
                                  memref::DimOp::create(b, loc, pageTable, 1),
                                  cIdx(b, *op.getPageSize()));
  } else {
    seqKV = memref::DimOp::create(b, loc, k, 2);
  }
  Value group = arith::DivUIOp::create(
      b, loc, headsQ, arith::MaxUIOp::create(b, loc, headsKV, cIdx(b, 1)));
  hkvIdx = arith::DivUIOp::create(b, loc, hIdx, group);
  Value dims[] = {batch, headsQ, headsKV, seqQ, seqKV};
  for (int i = 0; i < 5; ++i)
    regions.sizes[i] = toI32(b, dims[i]);
  regions.sizes[static_cast<int>(Size::D)] = cI32(b, D);
  regions.sizes[static_cast<int>(Size::Dv)] = cI32(b, Dv);
  regions.computeCaptureBounds(b, loc);
  if (pageTable) {
    // This batch's length, clamped into the capacity: what regions, the
    // scale and the key loop see as Skv.
    Value len = memref::LoadOp::create(b, loc, seqLens, ValueRange{bIdx});
    len = arith::MaxSIOp::create(b, loc, len, cI32(b, 0));
    seqKV = arith::MinUIOp::create(
        b, loc, arith::IndexCastOp::create(b, loc, b.getIndexType(), len),
        seqKV);
    regions.sizes[static_cast<int>(Size::Skv)] = toI32(b, seqKV);
  }
  b32 = toI32(b, bIdx);
  h32 = toI32(b, hIdx);
  hLast32 = toI32(b, arith::SubIOp::create(
                         b, loc, arith::AddIOp::create(b, loc, hIdx, packedHeads),
                         cIdx(b, 1)));

  scale = op.getScale()
              ? cF32(b, op.getScale()->convertToDouble())
              : (op.hasScaleExpr()
                     ? regions.inlineRegion(b, op.getScaleExpr(), {})
                     : cF32(b, 1.0 / std::sqrt(double(D))));
  // Softmax runs in the log2 domain; a score region sees the plain scale.
  sScale =
      op.foldsLog2eIntoScale()
          ? arith::MulFOp::create(b, loc, scale, cF32(b, kLog2E)).getResult()
          : scale;
  scaleFoldsIntoExp = op.foldsLog2eIntoScale() &&
                      (op.getScale() ? op.getScale()->convertToDouble() > 0
                                     : !op.hasScaleExpr());
  logitScaleDefers = op.hasScore() && hasRunningMax(norm) &&
                     runsInLog2Domain(norm);
  deferredScale = op.hasScore() ? cF32(b, kLog2E) : sScale;
  q0 = arith::MulIOp::create(b, loc, qTile, rowsPerHead);

  keySlots = seqKV;
  if (op.getKvIndex()) {
    kvIndex = outside.lookup(op.getKvIndex());
    keySlots = memref::DimOp::create(b, loc, kvIndex, 2);
  }
  Value allTiles = arith::CeilDivUIOp::create(b, loc, keySlots, cIdx(b, BK));
  Value perPart = arith::CeilDivUIOp::create(b, loc, allTiles, parts);
  tileBegin = arith::MinUIOp::create(
      b, loc, arith::MulIOp::create(b, loc, part, perPart), allTiles);
  numTiles = arith::MinUIOp::create(
      b, loc, arith::AddIOp::create(b, loc, tileBegin, perPart), allTiles);
  qLast = toI32(
      b, arith::SubIOp::create(
             b, loc,
             arith::MinUIOp::create(
                 b, loc, arith::AddIOp::create(b, loc, q0, rowsPerHead), seqQ),
             cIdx(b, 1)));
}

Value KernelBase::classifyTile(OpBuilder &b, Value k0) {
  Value kLastIdx = arith::SubIOp::create(
      b, loc, arith::MinUIOp::create(b, loc, add(b, k0, BK), seqKV),
      cIdx(b, 1));
  // (kv_index ops have no classifier: their key positions are data.)
  Value cls = classifyBlock(b, loc, op, regions,
                            {b32, h32, hLast32, toI32(b, q0), qLast,
                             toI32(b, k0), toI32(b, kLastIdx)});
  if (clusterCtas > 1 && op.hasMask())
    cls = classifyForCluster(b, cls, k0, kLastIdx);
  // The tile reaching past the last key is PARTIAL whatever the mask: only
  // PARTIAL tiles check that keys exist (scoreEntry), so interior tiles
  // skip a compare and a select per score.
  Value ragged = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ugt,
                                       add(b, k0, BK), seqKV);
  cls = partialWhere(b, loc, cls, ragged);
  if (!keptMap)
    return cls;
  return classifyKept(
      b, cls, hIdx, q0,
      arith::IndexCastOp::create(b, loc, b.getIndexType(), qLast), k0,
      kLastIdx);
}

Value KernelBase::classifyForCluster(OpBuilder &b, Value cls, Value k0,
                                     Value kLast) {
  // The cluster's CTAs walk the same key tiles: a tile any of them keeps
  // is visited by all, PARTIAL (every entry masked) where this CTA's rows
  // keep none of it. Only tiles EMPTY for this CTA need the others'
  // verdicts; a CTA past Sq (the last cluster's) keeps nothing of its own.
  Value empty = cI32(b, kTileEmpty);
  Value rowsExist =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, q0, seqQ);
  cls = arith::SelectOp::create(b, loc, rowsExist, cls, empty);
  Value ownEmpty =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, cls, empty);
  auto ifOp = scf::IfOp::create(
      b, loc, ownEmpty,
      [&](OpBuilder &b, Location) {
        Value any = arith::ConstantIntOp::create(b, loc, 0, 1);
        for (int64_t r = 0; r < clusterCtas; ++r) {
          Value rq0 = arith::MulIOp::create(b, loc, add(b, clusterFirstTile, r),
                                            rowsPerHead);
          Value rqLast = arith::SubIOp::create(
              b, loc,
              arith::MinUIOp::create(
                  b, loc, arith::AddIOp::create(b, loc, rq0, rowsPerHead),
                  seqQ),
              cIdx(b, 1));
          Value theirs = classifyBlock(
              b, loc, op, regions,
              {b32, h32, hLast32, toI32(b, rq0), toI32(b, rqLast),
               toI32(b, k0), toI32(b, kLast)});
          Value kept = arith::AndIOp::create(
              b, loc,
              arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, rq0,
                                    seqQ),
              arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne, theirs,
                                    empty));
          any = arith::OrIOp::create(b, loc, any, kept);
        }
        scf::YieldOp::create(
            b, loc,
            ValueRange{arith::SelectOp::create(b, loc, any,
                                               cI32(b, kTilePartial), empty)
                           .getResult()});
      },
      [&](OpBuilder &b, Location) { scf::YieldOp::create(b, loc, cls); });
  return ifOp.getResult(0);
}

Value KernelBase::classifyKept(OpBuilder &b, Value cls, Value head, Value qLo,
                               Value qHi, Value kLo, Value kHi) {
  // Are all / any of the N-token blocks under the tile kept?
  Value n = cIdx(b, *op.getSelectBlock()), one = cIdx(b, 1);
  Value qbLo = arith::DivUIOp::create(b, loc, qLo, n);
  Value qbEnd = add(b, arith::DivUIOp::create(b, loc, qHi, n), 1);
  Value kbLo = arith::DivUIOp::create(b, loc, kLo, n);
  Value kbEnd = add(b, arith::DivUIOp::create(b, loc, kHi, n), 1);
  Value fls = arith::ConstantIntOp::create(b, loc, 0, 1);
  Value tru = arith::ConstantIntOp::create(b, loc, 1, 1);
  auto rows = scf::ForOp::create(
      b, loc, qbLo, qbEnd, one, ValueRange{fls, tru},
      [&](OpBuilder &b, Location, Value qb, ValueRange outer) {
        auto cols = scf::ForOp::create(
            b, loc, kbLo, kbEnd, one, outer,
            [&](OpBuilder &b, Location, Value kb, ValueRange acc) {
              Value kept = arith::CmpIOp::create(
                  b, loc, arith::CmpIPredicate::ne,
                  memref::LoadOp::create(b, loc, keptMap,
                                         ValueRange{bIdx, head, qb, kb}),
                  arith::ConstantIntOp::create(b, loc, 0, 8));
              scf::YieldOp::create(
                  b, loc,
                  ValueRange{arith::OrIOp::create(b, loc, acc[0], kept),
                             arith::AndIOp::create(b, loc, acc[1], kept)});
            });
        scf::YieldOp::create(b, loc, cols.getResults());
      });
  Value anyKept = rows.getResult(0), allKept = rows.getResult(1);
  Value empty = arith::OrIOp::create(
      b, loc, arith::XOrIOp::create(b, loc, anyKept, tru),
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, cls,
                            cI32(b, kTileEmpty)));
  return arith::SelectOp::create(
      b, loc, empty, cI32(b, kTileEmpty),
      arith::SelectOp::create(b, loc, allKept, cls, cI32(b, kTilePartial)));
}

Value KernelBase::keptAt(OpBuilder &b, Value head32, Value q32, Value kv32) {
  Value n = cIdx(b, *op.getSelectBlock()), one = cIdx(b, 1);
  auto blockOf = [&](Value pos32, Value size) {
    Value pos = arith::IndexCastOp::create(
        b, loc, b.getIndexType(),
        arith::MaxSIOp::create(b, loc, pos32, cI32(b, 0)));
    Value last = arith::SubIOp::create(
        b, loc, arith::MaxUIOp::create(b, loc, size, one), one);
    return arith::DivUIOp::create(
        b, loc, arith::MinUIOp::create(b, loc, pos, last), n);
  };
  Value head =
      arith::IndexCastOp::create(b, loc, b.getIndexType(), head32);
  Value byte = memref::LoadOp::create(
      b, loc, keptMap,
      ValueRange{bIdx, head, blockOf(q32, seqQ), blockOf(kv32, seqKV)});
  return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne, byte,
                               arith::ConstantIntOp::create(b, loc, 0, 8));
}

Value KernelBase::isVisited(OpBuilder &b, Value cls) {
  return isVisitedClass(b, loc, cls);
}

Value KernelBase::classifyAt(OpBuilder &b, Value t) {
  return classifyTileBefore(b, loc, t, numTiles, [&](OpBuilder &b, Value t) {
    return classifyTile(b, arith::MulIOp::create(b, loc, t, cIdx(b, BK)));
  });
}

KeyRows KernelBase::kvRows() {
  return {op,       loc,
          bIdx,     hkvIdx,
          keySlots, seqKV,
          Value(),  pageTable,
          kvIndex};
}

Value KernelBase::scoreEntry(OpBuilder &b, Value s, Value head32, Value q32,
                             Value kv32, Value keep, bool withMask) {
  // (Targets defer only where scaleFoldsIntoExp or logitScaleDefers.)
  Value t = deferScale && !op.hasScore()
                ? s
                : arith::MulFOp::create(b, loc, s, sScale).getResult();
  if (op.hasScore()) {
    t = regions.inlineRegion(b, op.getScore(), {t, b32, head32, q32, kv32});
    if (!deferScale)
      t = toNormalizerDomain(b, loc, norm, t);
  }
  if (withMask && op.hasMask())
    keep = arith::AndIOp::create(
        b, loc, keep,
        regions.inlineRegion(b, op.getMask(), {b32, head32, q32, kv32}));
  if (withMask && keptMap)
    keep = arith::AndIOp::create(b, loc, keep, keptAt(b, head32, q32, kv32));
  // Every key of a tile that is not PARTIAL exists (classifyTile), except
  // with kv_index, whose listed positions are data.
  bool checkKeys = withMask || kvIndex;
  return maskEntry(b, loc, norm, t, checkKeys ? keep : Value());
}

SmallVector<Value> KernelBase::scoresMaskedWhereNeeded(
    OpBuilder &b, Value cls,
    llvm::function_ref<SmallVector<Value>(OpBuilder &, bool)> scores) {
  Value partial = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, cls,
                                        cI32(b, kTilePartial));
  auto ifOp = scf::IfOp::create(
      b, loc, partial,
      [&](OpBuilder &b, Location) {
        scf::YieldOp::create(b, loc, scores(b, true));
      },
      [&](OpBuilder &b, Location) {
        scf::YieldOp::create(b, loc, scores(b, false));
      });
  return SmallVector<Value>(ifOp.getResults());
}

Value KernelBase::dequantizeChunk(OpBuilder &b, Value codes, Value pos,
                                  Value col, bool key) {
  Type f32 = b.getF32Type();
  if (*quant == KVQuant::int4)
    codes = unpackInt4Codes(b, loc, codes);
  int64_t n = cast<VectorType>(codes.getType()).getNumElements();
  SmallVector<Value> values;
  for (int64_t e = 0; e < n; ++e)
    values.push_back(vector::ExtractOp::create(b, loc, codes, e));
  Value scales, tokenScale;
  if (key) {
    Value group = kvRows().keyScaleGroup(b, pos);
    scales = vector::LoadOp::create(b, loc, VectorType::get({n}, f32), kScale,
                                    ValueRange{bIdx, hkvIdx, group, col});
  } else {
    tokenScale =
        memref::LoadOp::create(b, loc, vScale, ValueRange{bIdx, hkvIdx, pos});
  }
  SmallVector<Value> out;
  for (int64_t e = 0; e < n; ++e) {
    Value x = decodeKVCode(b, loc, *quant, values[e]);
    Value s = key ? vector::ExtractOp::create(b, loc, scales, e).getResult()
                  : tokenScale;
    out.push_back(arith::TruncFOp::create(b, loc, elt,
                                          arith::MulFOp::create(b, loc, x, s)));
  }
  return vector::FromElementsOp::create(b, loc, VectorType::get({n}, elt),
                                        out);
}

Value KernelBase::sinkMax(OpBuilder &b, Value head32) {
  if (!op.hasSink())
    return initialRowMax(b, loc, Value(), Value());
  // Under split-KV only part 0 counts the sink.
  Value partZero = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                         part, cIdx(b, 0));
  Value sink = regions.inlineRegion(b, op.getSink(), {head32});
  return initialRowMax(b, loc, toNormalizerDomain(b, loc, norm, sink),
                       partZero);
}
