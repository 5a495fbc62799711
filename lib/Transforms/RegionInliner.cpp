//===- RegionInliner.cpp - attn.attention regions inlined into kernels ----===//
#include "lib/Transforms/RegionInliner.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"

using namespace mlir;
using namespace mlir::attn;

void RegionInliner::computeCaptureBounds(OpBuilder &b, Location loc) {
  captureMaxIndex.clear();
  Value one = arith::ConstantIntOp::create(b, loc, 1, 32);
  for (Value c : op.getCaptures()) {
    Value capture = outside.lookupOrDefault(c);
    auto type = cast<MemRefType>(capture.getType());
    for (int64_t d = 0; d < type.getRank(); ++d) {
      Value size = arith::IndexCastOp::create(
          b, loc, b.getI32Type(), memref::DimOp::create(b, loc, capture, d));
      captureMaxIndex.push_back(arith::SubIOp::create(b, loc, size, one));
    }
  }
}

SmallVector<Value> RegionInliner::clampedIndices(OpBuilder &b, Location loc,
                                                 Value tensor,
                                                 ValueRange indices,
                                                 IRMapping &map) {
  unsigned captureIdx = 0;
  for (auto [i, c] : llvm::enumerate(op.getCaptures()))
    if (c == tensor)
      captureIdx = i;
  unsigned base = 0;
  for (unsigned i = 0; i < captureIdx; ++i)
    base += cast<MemRefType>(op.getCaptures()[i].getType()).getRank();
  SmallVector<Value> clamped;
  Value zero = arith::ConstantIntOp::create(b, loc, 0, 32);
  for (auto [d, idx] : llvm::enumerate(indices)) {
    Value x = map.lookupOrDefault(idx);
    x = arith::MaxSIOp::create(b, loc, x, zero);
    x = arith::MinSIOp::create(b, loc, x, captureMaxIndex[base + d]);
    clamped.push_back(
        arith::IndexCastOp::create(b, loc, b.getIndexType(), x));
  }
  return clamped;
}

Value RegionInliner::loadCapture(OpBuilder &b, LoadOp load, IRMapping &map) {
  SmallVector<Value> indices = clampedIndices(
      b, load.getLoc(), load.getTensor(), load.getIndices(), map);
  return memref::LoadOp::create(b, load.getLoc(),
                                outside.lookupOrDefault(load.getTensor()),
                                indices);
}

void RegionInliner::accumulate(OpBuilder &b, AccumulateGradOp acc,
                               IRMapping &map) {
  Value buffer = gradientOf.lookup(acc.getTarget());
  if (!buffer)
    return;
  Location loc = acc.getLoc();
  SmallVector<Value> indices =
      acc.getIndices().empty()
          ? SmallVector<Value>{paramLane
                                   ? paramLane
                                   : arith::ConstantIndexOp::create(b, loc, 0)
                                         .getResult()}
          : clampedIndices(b, loc, acc.getTarget(), acc.getIndices(), map);
  Value old = memref::LoadOp::create(b, loc, buffer, indices);
  Value sum = arith::AddFOp::create(b, loc, old,
                                    map.lookupOrDefault(acc.getValue()));
  memref::StoreOp::create(b, loc, sum, buffer, indices);
}

Value RegionInliner::inlineRegion(OpBuilder &b, Region &region,
                                  ValueRange args) {
  Block &block = region.front();
  IRMapping map = outside;
  for (auto [arg, value] : llvm::zip(block.getArguments(), args))
    map.map(arg, value);
  for (Operation &o : block.without_terminator()) {
    if (auto dim = dyn_cast<DimOp>(o)) {
      map.map(dim.getResult(), sizes[static_cast<int>(dim.getSize())]);
    } else if (auto load = dyn_cast<LoadOp>(o)) {
      map.map(load.getResult(), loadCapture(b, load, map));
    } else if (auto acc = dyn_cast<AccumulateGradOp>(o)) {
      accumulate(b, acc, map);
    } else {
      b.clone(o, map);
    }
  }
  auto yield = cast<YieldOp>(block.getTerminator());
  if (yield.getValues().empty())
    return Value();
  return map.lookupOrDefault(yield.getValues().front());
}
