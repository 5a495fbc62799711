//===- WorkRange.cpp - work loop to a per-call range of items -------------===//
#include "lib/Target/CPU/Passes.h"
#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/PatternMatch.h"

namespace mlir::attn::cpu {
#define GEN_PASS_DEF_ATTNCPUWORKRANGEPASS
#include "lib/Target/CPU/Passes.h.inc"
} // namespace mlir::attn::cpu

using namespace mlir;

namespace {

/// Inlines `memref.alloca_scope` bodies: with one item at a time per call
/// the buffers can live for the whole call. A scope holding a dynamically
/// sized buffer stays, so each item frees its own.
void inlineAllocaScopes(RewriterBase &rw, Operation *root) {
  SmallVector<memref::AllocaScopeOp> scopes;
  root->walk([&](memref::AllocaScopeOp s) { scopes.push_back(s); });
  for (memref::AllocaScopeOp scope : scopes) {
    bool dynamic = false;
    scope->walk([&](memref::AllocaOp a) {
      dynamic |= !a.getType().hasStaticShape();
    });
    if (dynamic)
      continue;
    Block *body = &scope.getBodyRegion().front();
    Operation *ret = body->getTerminator();
    rw.eraseOp(ret);
    rw.inlineBlockBefore(body, scope);
    rw.eraseOp(scope);
  }
}

LogicalResult convertWorkLoop(func::FuncOp func, scf::ParallelOp par) {
  IRRewriter rw(func.getContext());
  Location loc = par.getLoc();
  if (par.getNumLoops() != 3 || par.getNumResults() != 0)
    return par.emitOpError("expected a 3-d work loop without results");
  IndexType idx = rw.getIndexType();
  unsigned n = func.getNumArguments();
  if (failed(func.insertArgument(n, idx, {}, loc)) ||
      failed(func.insertArgument(n + 1, idx, {}, loc)))
    return func.emitOpError("cannot append the work range arguments");
  func.setArgAttr(n, "attn.name", rw.getStringAttr("work_begin"));
  func.setArgAttr(n + 1, "attn.name", rw.getStringAttr("work_end"));
  Value begin = func.getArgument(n), end = func.getArgument(n + 1);

  rw.setInsertionPoint(par);
  Value one = arith::ConstantIndexOp::create(rw, loc, 1);
  Value perBatch = arith::MulIOp::create(rw, loc, par.getUpperBound()[1],
                                         par.getUpperBound()[2]);
  Value tiles = par.getUpperBound()[2];
  auto loop = scf::ForOp::create(rw, loc, begin, end, one);
  rw.setInsertionPointToStart(loop.getBody());
  Value w = loop.getInductionVar();
  Value bIdx = arith::DivUIOp::create(rw, loc, w, perBatch);
  Value rest = arith::RemUIOp::create(rw, loc, w, perBatch);
  Value hIdx = arith::DivUIOp::create(rw, loc, rest, tiles);
  // Query tiles are handed out last first: under causal-like masks the
  // last rows are the heaviest, and starting with them balances threads.
  Value tIdx = arith::SubIOp::create(
      rw, loc, arith::SubIOp::create(rw, loc, tiles, one),
      arith::RemUIOp::create(rw, loc, rest, tiles));

  Block *body = par.getBody();
  rw.eraseOp(body->getTerminator()); // scf.reduce
  rw.inlineBlockBefore(body, loop.getBody()->getTerminator(),
                       ValueRange{bIdx, hIdx, tIdx});
  rw.eraseOp(par);

  inlineAllocaScopes(rw, loop);
  // Static buffers move to the entry block: allocated once per call.
  SmallVector<memref::AllocaOp> allocas;
  loop->walk([&](memref::AllocaOp a) {
    if (a.getType().hasStaticShape())
      allocas.push_back(a);
  });
  Block &entry = func.getBody().front();
  for (memref::AllocaOp a : allocas)
    a->moveBefore(&entry, entry.begin());
  return success();
}

struct AttnCPUWorkRangePass final
    : mlir::attn::cpu::impl::AttnCPUWorkRangePassBase<AttnCPUWorkRangePass> {
  void runOnOperation() override {
    func::FuncOp func = getOperation();
    SmallVector<scf::ParallelOp> loops;
    func.walk([&](scf::ParallelOp p) {
      if (p->hasAttr(mlir::attn::kWorkLoopAttr))
        loops.push_back(p);
    });
    if (loops.empty())
      return;
    if (loops.size() > 1) {
      func.emitOpError("expected one attention per function, got ")
          << loops.size();
      return signalPassFailure();
    }
    if (failed(convertWorkLoop(func, loops.front())))
      signalPassFailure();
  }
};

} // namespace
