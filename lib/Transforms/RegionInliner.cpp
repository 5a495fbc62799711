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

Value RegionInliner::loadCapture(OpBuilder &b, LoadOp load, IRMapping &map) {
  Location loc = load.getLoc();
  unsigned captureIdx = 0;
  for (auto [i, c] : llvm::enumerate(op.getCaptures()))
    if (c == load.getTensor())
      captureIdx = i;
  unsigned base = 0;
  for (unsigned i = 0; i < captureIdx; ++i)
    base += cast<MemRefType>(op.getCaptures()[i].getType()).getRank();
  SmallVector<Value> indices;
  Value zero = arith::ConstantIntOp::create(b, loc, 0, 32);
  for (auto [d, idx] : llvm::enumerate(load.getIndices())) {
    Value x = map.lookupOrDefault(idx);
    x = arith::MaxSIOp::create(b, loc, x, zero);
    x = arith::MinSIOp::create(b, loc, x, captureMaxIndex[base + d]);
    indices.push_back(
        arith::IndexCastOp::create(b, loc, b.getIndexType(), x));
  }
  return memref::LoadOp::create(b, loc, outside.lookupOrDefault(load.getTensor()),
                                indices);
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
    } else {
      b.clone(o, map);
    }
  }
  auto yield = cast<YieldOp>(block.getTerminator());
  return map.lookupOrDefault(yield.getValues().front());
}
