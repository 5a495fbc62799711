//===- NVPTXTma.cpp - the TMA producer and consumers, mbarriers -----------===//
//
// The sm_90a warp-specialized tensor-core attention kernel: a producer
// streams Q, K and V tiles by TMA into swizzled shared memory (layouts:
// NVPTXKernel.cpp's top comment), full/empty mbarriers pace it against the
// consumer warpgroups, which pipeline their wgmma chains with softmax.
//
//===----------------------------------------------------------------------===//

#include "lib/Target/NVPTX/NVPTXKernelBuilder.h"

#include "lib/Target/NVPTX/NVPTXTarget.h"

#include "lib/Transforms/QueryCodes.h"
#include "lib/Transforms/RegionInliner.h"
#include "lib/Transforms/RowState.h"
#include "lib/Transforms/TileWalk.h"
#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include "attn/runtime.h"

#include <cmath>

using namespace mlir;
using namespace mlir::attn;
using mlir::attn::nvptx::bitcastPair;
namespace mlir::attn::nvptx::kernel {

/// The buffer of the n-th kept tile.
Value GpuAttentionBuilder::bufferOf(OpBuilder &b, Value n) {
  return arith::RemUIOp::create(b, loc, n, cIdx(b, 2));
}

/// The phase parity that completes when the n-th kept tile's buffer is
/// full (its (n / 2)-th use), or, with previousUse, when the use before it
/// released the buffer; a fresh barrier counts that one as complete.
Value GpuAttentionBuilder::useParity(OpBuilder &b, Value n, bool previousUse) {
  Value use = arith::DivUIOp::create(b, loc, n, cIdx(b, 2));
  Value bit = arith::RemUIOp::create(b, loc, use, cIdx(b, 2));
  Value parity = arith::IndexCastUIOp::create(b, loc, b.getI1Type(), bit);
  if (!previousUse)
    return parity;
  return arith::XOrIOp::create(b, loc, parity,
                               arith::ConstantIntOp::create(b, loc, 1, 1));
}

/// Each consumer warpgroup of the TMA kernel, software-pipelined as in
/// FlashAttention-3: while tile j's softmax runs on the CUDA cores, the
/// tensor cores compute O += P_{j-1} V_{j-1}, issued together with
/// S_j = Q K_j^T. Per kept tile j: wait for its buffer; issue S_j and
/// P_{j-1} V_{j-1} (two wgmma groups); wait for S_j only; softmax; wait
/// for O; release tile j-1's buffer; rescale O. The first kept tile is
/// peeled (it has no previous P) and the last P V drains after the loop,
/// so no pending accumulator ever meets a branch.
///
/// With two consumer warpgroups the issues ping-pong (FlashAttention-3's
/// warp scheduler barriers): each warpgroup issues its wgmma groups only
/// in its turn, between bar.sync on its own named barrier and bar.arrive
/// on the other's (256 threads each: its 128 syncing, the other's 128
/// arriving), so one warpgroup's softmax runs while the other's matmuls
/// occupy the tensor cores instead of both contending at once. Warpgroup
/// 1 hands warpgroup 0 the first turn; both walk the same kept tiles, so
/// their turns pair up, and warpgroup 0 takes one last turn after its loop
/// that consumes warpgroup 1's final hand-over (no arrival outlives the
/// CTA, also when no tile is kept).
SmallVector<Value> GpuAttentionBuilder::tmaConsumer(OpBuilder &b,
                                                    Value barriers,
                                                    ValueRange init) {
  Value ticks = cIdx(b, 10000000);
  bool pingPong = threads == 2 * kWarpsPerGroup * 32;
  // Named barriers 1 and 2 (0 is the CTA barrier): warpgroup g's turn,
  // as inline asm with immediate ids (one branch per warpgroup): the NVVM
  // ops take the id in a register, for which ptxas reserves all 16
  // barriers.
  auto namedBarrier = [&](OpBuilder &b, int32_t id, bool arrive) {
    LLVM::InlineAsmOp::create(
        b, loc, TypeRange(), ValueRange(),
        std::string(arrive ? "bar.arrive " : "bar.sync ") +
            std::to_string(id) + ", " + std::to_string(threads) + ";",
        "", /*has_side_effects=*/true, /*is_align_stack=*/false,
        LLVM::tailcallkind::TailCallKind::None,
        LLVM::AsmDialectAttr::get(b.getContext(), LLVM::AsmDialect::AD_ATT),
        ArrayAttr());
  };
  Value isFirst;
  if (pingPong) {
    Value tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
    isFirst = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, tid,
                                    cIdx(b, kWarpsPerGroup * 32));
  }
  // The turn of warpgroup 0 (first) or 1 with sync, or with arrive the
  // other one's.
  auto turnBarrier = [&](OpBuilder &b, bool arrive) {
    if (!pingPong)
      return;
    auto emit = [&](int32_t id) {
      return [&, id](OpBuilder &b, Location) {
        namedBarrier(b, id, arrive);
        scf::YieldOp::create(b, loc);
      };
    };
    scf::IfOp::create(b, loc, isFirst, emit(arrive ? 2 : 1),
                      emit(arrive ? 1 : 2));
  };
  auto awaitTurn = [&](OpBuilder &b) { turnBarrier(b, false); };
  auto passTurn = [&](OpBuilder &b) { turnBarrier(b, true); };
  if (pingPong) // warpgroup 1 hands warpgroup 0 the first turn
    scf::IfOp::create(b, loc, isFirst, [&](OpBuilder &b, Location) {
      scf::YieldOp::create(b, loc);
    }, [&](OpBuilder &b, Location) {
      namedBarrier(b, 1, true);
      scf::YieldOp::create(b, loc);
    });
  auto waitFull = [&](OpBuilder &b, Value n) {
    Value buffer = bufferOf(b, n);
    nvgpu::MBarrierTryWaitParityOp::create(b, loc, barriers,
                                           useParity(b, n, false), ticks,
                                           add(b, buffer, 1));
    return buffer;
  };
  Value leadLane;
  if (clusterCtas > 1) {
    Value tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
    leadLane = arith::CmpIOp::create(
        b, loc, arith::CmpIPredicate::eq,
        arith::RemUIOp::create(b, loc, tid, cIdx(b, 32)), cIdx(b, 0));
  }
  auto release = [&](OpBuilder &b, Value buffer) {
    if (clusterCtas == 1) {
      nvgpu::MBarrierArriveOp::create(
          b, loc, nvgpu::MBarrierTokenType::get(b.getContext()), barriers,
          add(b, buffer, 3));
      return;
    }
    // Every CTA of the cluster refills this buffer in all of them: one
    // arrival per warp (its wgmma reads of the buffer have retired for
    // the whole warpgroup) on each CTA's empty barrier.
    scf::IfOp::create(b, loc, leadLane, [&](OpBuilder &b, Location) {
      Value address = nvgpu::MBarrierGetOp::create(
          b, loc, b.getI32Type(), barriers, add(b, buffer, 3));
      Value local = LLVM::IntToPtrOp::create(
          b, loc, LLVM::LLVMPointerType::get(b.getContext(), 3), address);
      auto clusterPtr = LLVM::LLVMPointerType::get(b.getContext(), 7);
      for (int64_t rank = 0; rank < clusterCtas; ++rank) {
        Value remote = NVVM::MapaOp::create(b, loc, clusterPtr, local,
                                            cI32(b, rank));
        NVVM::MBarrierArriveOp::create(b, loc, Type(), remote, Value(),
                                       NVVM::MemScopeKind::CLUSTER, false);
      }
      scf::YieldOp::create(b, loc);
    });
  };
  auto flatten = [](ArrayRef<SmallVector<Value>> steps) {
    SmallVector<Value> flat;
    for (const SmallVector<Value> &step : steps)
      flat.append(step.begin(), step.end());
    return flat;
  };
  auto regroup = [](ValueRange flat) {
    SmallVector<SmallVector<Value>> steps;
    for (size_t i = 0; i < flat.size(); i += 4)
      steps.push_back(SmallVector<Value>(flat.begin() + i,
                                         flat.begin() + i + 4));
    return steps;
  };
  int64_t numP = BK / 16 * 4;
  ValueRange initMl = init.take_front(4), initO = init.drop_front(4);

  // Q has landed.
  nvgpu::MBarrierTryWaitParityOp::create(
      b, loc, barriers, arith::ConstantIntOp::create(b, loc, 0, 1), ticks,
      cIdx(b, 0));
  // The first kept tile (numTiles when there is none).
  auto find = scf::WhileOp::create(
      b, loc, TypeRange{b.getIndexType()}, ValueRange{tileBegin},
      [&](OpBuilder &b, Location, ValueRange args) {
        Value t = args[0];
        Value inRange = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult,
                                              t, numTiles);
        Value skipped = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                              classifyAt(b, t),
                                              cI32(b, kTileEmpty));
        scf::ConditionOp::create(
            b, loc, arith::AndIOp::create(b, loc, inRange, skipped), t);
      },
      [&](OpBuilder &b, Location, ValueRange args) {
        scf::YieldOp::create(b, loc, add(b, args[0], 1));
      });
  Value t0 = find.getResult(0);
  Value any =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, t0, numTiles);
  auto top = scf::IfOp::create(
      b, loc, any,
      [&](OpBuilder &b, Location) {
        Value first = waitFull(b, cIdx(b, 0));
        Value k0 = arith::MulIOp::create(b, loc, t0, cIdx(b, BK));
        SmallVector<Value> p;
        Value alpha[2];
        awaitTurn(b);
        SmallVector<Value> s0 = qkWgmma(b, first, !pingPong);
        if (pingPong) {
          passTurn(b);
          s0 = waitWarpgroup(b, s0, 0);
        }
        SmallVector<Value> ml = softmaxStep(b, fragments(s0), k0,
                                            classifyAt(b, t0), initMl, p,
                                            alpha);
        // O is still zero: nothing to rescale.
        SmallVector<Value> loopInit = {cIdx(b, 1), first};
        loopInit.append(ml);
        loopInit.append(flatten(pOperands(b, p)));
        loopInit.append(initO.begin(), initO.end());
        SmallVector<Value> final = walkKeyTilesCarrying(
            b, loc, add(b, t0, 1), numTiles, loopInit,
            [&](OpBuilder &b, Value t) { return classifyAt(b, t); },
            [&](OpBuilder &b, Value t, Value cls,
                ValueRange it) -> SmallVector<Value> {
              Value n = it[0], previous = it[1];
              ValueRange ml = it.slice(2, 4), pRegs = it.slice(6, numP),
                         o = it.drop_front(6 + numP);
              Value buffer = waitFull(b, n);
              awaitTurn(b);
              SmallVector<Value> sPending = qkWgmma(b, buffer, false);
              SmallVector<Value> oPending =
                  pvWgmma(b, regroup(pRegs), previous, o, false);
              passTurn(b);
              SmallVector<Value> sReady = waitWarpgroup(b, sPending, 1);
              SmallVector<Value> p;
              Value alpha[2];
              SmallVector<Value> nextMl =
                  softmaxStep(b, fragments(sReady),
                              arith::MulIOp::create(b, loc, t, cIdx(b, BK)),
                              cls, ml, p, alpha);
              SmallVector<Value> nextO = waitWarpgroup(b, oPending, 0);
              // Packed only now: the carried P registers are still
              // being read by the P V in flight until the wait.
              SmallVector<Value> nextP = flatten(pOperands(b, p));
              release(b, previous);
              rescale(b, nextO, alpha);
              SmallVector<Value> yield = {add(b, n, 1), buffer};
              yield.append(nextMl);
              yield.append(nextP);
              yield.append(nextO);
              return yield;
            });
        // The last tile's P V.
        ValueRange done = final;
        Value last = done[1];
        SmallVector<Value> o = pvWgmma(b, regroup(done.slice(6, numP)), last,
                                       done.drop_front(6 + numP), true);
        release(b, last);
        SmallVector<Value> result(done.slice(2, 4));
        result.append(o);
        scf::YieldOp::create(b, loc, result);
      },
      [&](OpBuilder &b, Location) { scf::YieldOp::create(b, loc, init); });
  if (pingPong) {
    // Warpgroup 1's last hand-over (its first one when no tile is kept).
    scf::IfOp::create(b, loc, isFirst, [&](OpBuilder &b, Location) {
      namedBarrier(b, 1, false);
      scf::YieldOp::create(b, loc);
    });
  }
  return SmallVector<Value>(top.getResults());
}

/// rows x cols of a [B, H, S, cols] tensor (rows from row0, zero past S)
/// into dynamic shared memory at smemOffset (8 W-aligned) as atoms of rows
/// x W bytes: one TMA box of rows x W / 2 elements per atom, which the
/// TMA unit stores swizzled (see NVPTXKernel.cpp's top comment), as the wgmma
/// descriptors read it.
void GpuAttentionBuilder::tmaLoad(OpBuilder &b, Value map, Value barriers,
                                  int64_t barrier, int64_t smemOffset,
                                  int64_t rows, int64_t cols,
                                  int64_t swizzleBytes, Value row0,
                                  Value head,
                                  llvm::function_ref<bool(int64_t)> issuesBox,
                                  Value multicastMask) {
  auto smem = gpu::AddressSpaceAttr::get(b.getContext(),
                                         gpu::AddressSpace::Workgroup);
  int64_t boxCols = swizzleBytes / elementBytes();
  // The map is 4-D ([B, H, S, D]); its box is 1 x 1 x rows x W / 2.
  auto boxType = MemRefType::get({1, 1, rows, boxCols}, elt,
                                 MemRefLayoutAttrInterface{}, smem);
  for (int64_t a = 0; a < cols / boxCols; ++a) {
    if (issuesBox && !issuesBox(a))
      continue;
    Value dst = memref::ViewOp::create(
        b, loc, boxType, dynamicShared,
        cIdx(b, smemOffset + a * rows * swizzleBytes), ValueRange{});
    // Coordinates innermost first: column, row, head, batch.
    nvgpu::TmaAsyncLoadOp::create(
        b, loc, dst, barriers, map,
        ValueRange{cIdx(b, a * boxCols), row0, head, bIdx}, cIdx(b, barrier),
        multicastMask, Value());
  }
}

/// sm_90a with TMA: warp specialization. The consumer warpgroups (threads
/// 0 .. threads - 1: one or two warpgroups) compute, each on its own 64
/// rows; the first thread after them is the producer, streaming K/V tiles
/// by TMA into two buffers that both warpgroups read. mbarriers: 0 = Q
/// landed, 1 + s = buffer s full (its TMA bytes arrived), 3 + s = buffer s
/// empty (every consumer thread is done with it). The n-th kept tile uses
/// buffer n % 2 for the (n / 2)-th time, so its full phase has parity
/// (n / 2) % 2, and the producer refilling it waits for the previous use's
/// empty phase (the opposite parity; a fresh barrier passes that wait at
/// once). Both sides walk the same tiles, the classifier skipping EMPTY
/// ones.
///
/// In a cluster of C CTAs (clusterCtas, variants whose tiles do not depend
/// on the query rows), adjacent query tiles share each K/V tile: the
/// producer of rank r loads the tile's TMA boxes r, r + C, ... (K's, then
/// V's) with .multicast::cluster into every CTA, each CTA's full barrier
/// expecting the whole tile; a buffer is free again when the consumer
/// warps of all C CTAs are done with it, so each warp arrives once on
/// every CTA's empty barrier (mapa, then a remote arrive). Cluster
/// barriers order the barriers' initialization before any copy or arrival
/// and keep every CTA alive until the others' last arrivals (PTX ISA,
/// "Distributed Shared Memory": a CTA's shared memory must not be accessed
/// after it exits).
void GpuAttentionBuilder::tmaPipeline(OpBuilder &b, ValueRange init,
                                      ValueRange tensorMaps) {
  // The kernel takes plain pointers (a gpu.func signature cannot carry
  // nvgpu types through the NVVM lowering); the casts fold away once
  // nvgpu is lowered to the same pointers.
  auto mapOf = [&](Value pointer, int64_t rows, int64_t swizzleBytes) {
    auto smem = gpu::AddressSpaceAttr::get(b.getContext(),
                                           gpu::AddressSpace::Workgroup);
    nvgpu::TensorMapSwizzleKind swizzle =
        swizzleBytes == 128  ? nvgpu::TensorMapSwizzleKind::SWIZZLE_128B
        : swizzleBytes == 64 ? nvgpu::TensorMapSwizzleKind::SWIZZLE_64B
                             : nvgpu::TensorMapSwizzleKind::SWIZZLE_32B;
    Type type = nvgpu::TensorMapDescriptorType::get(
        b.getContext(),
        MemRefType::get({1, 1, rows, swizzleBytes / elementBytes()}, elt,
                        MemRefLayoutAttrInterface{}, smem),
        swizzle,
        nvgpu::TensorMapL2PromoKind::L2PROMO_128B,
        nvgpu::TensorMapOOBKind::OOB_ZERO,
        nvgpu::TensorMapInterleaveKind::INTERLEAVE_NONE);
    return UnrealizedConversionCastOp::create(b, loc, type, pointer)
        .getResult(0);
  };
  Value qMap = mapOf(tensorMaps[0], BQ, qkSwizzle),
        kMap = mapOf(tensorMaps[1], BK, qkSwizzle),
        vMap = mapOf(tensorMaps[2], BK, vSwizzle);
  auto smem = gpu::AddressSpaceAttr::get(b.getContext(),
                                         gpu::AddressSpace::Workgroup);
  auto groupType = nvgpu::MBarrierGroupType::get(b.getContext(), smem, 5);
  Value barriers = nvgpu::MBarrierCreateOp::create(b, loc, groupType);
  Value tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
  Value first = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, tid,
                                      cIdx(b, 0));
  // An empty barrier waits for every consumer thread of the CTA, or in a
  // cluster for one arrival per consumer warp of each CTA (see release).
  int64_t emptyArrivals =
      clusterCtas > 1 ? clusterCtas * (threads / 32) : threads;
  scf::IfOp::create(b, loc, first, [&](OpBuilder &b, Location) {
    for (int64_t i = 0; i < 5; ++i)
      nvgpu::MBarrierInitOp::create(
          b, loc, barriers, cIdx(b, i < 3 ? 1 : emptyArrivals), cIdx(b, i),
          Value());
    // The TMA unit (async proxy) completes transactions on these barriers.
    fenceSharedToAsyncProxy(b);
    // ... and the other CTAs of the cluster arrive on them.
    if (clusterCtas > 1)
      NVVM::FenceMbarrierInitOp::create(b, loc);
    scf::YieldOp::create(b, loc);
  });
  // The only CTA-wide barrier; in a cluster, every CTA's barriers are
  // initialized before any CTA's copies or arrivals reach them.
  if (clusterCtas > 1)
    clusterBarrier(b);
  else
    gpu::BarrierOp::create(b, loc);
  Value ticks = cIdx(b, 10000000);
  int64_t kvBytes = BK * (D + Dv) * elementBytes();
  int64_t kTile = BK * D * elementBytes(), vTile = BK * Dv * elementBytes();
  int64_t kBoxes = D * elementBytes() / qkSwizzle;
  Value rank = clusterCtas > 1 ? NVVM::ClusterId::create(b, loc, b.getI32Type())
                                     .getResult()
                               : Value();
  Value consumer = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, tid,
                                         cIdx(b, threads));
  // Two consumer warpgroups: the producer's is a whole warpgroup, which
  // hands registers to them (setmaxnreg, executed by whole warpgroups).
  bool shareRegisters = config.shareRegisters && threads > kWarpsPerGroup * 32;
  auto [consumerRegisters, producerRegisters] = registerSplit(Dv);
  scf::IfOp::create(
      b, loc, consumer,
      [&](OpBuilder &b, Location) {
        if (shareRegisters)
          NVVM::SetMaxRegisterOp::create(b, loc, consumerRegisters,
                                         NVVM::SetMaxRegisterAction::increase);
        epilogue(b, tmaConsumer(b, barriers, init));
        scf::YieldOp::create(b, loc);
      },
      [&](OpBuilder &b, Location) {
        if (shareRegisters)
          NVVM::SetMaxRegisterOp::create(b, loc, producerRegisters,
                                         NVVM::SetMaxRegisterAction::decrease);
        Value producer = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                               tid, cIdx(b, threads));
        scf::IfOp::create(b, loc, producer, [&](OpBuilder &b, Location) {
          // The maps are grid-constant kernel parameters (kTensorMapArgsAttr):
          // written before the launch, so no tensor-map proxy fence.
          nvgpu::MBarrierArriveExpectTxOp::create(
              b, loc, barriers, cIdx(b, BQ * D * elementBytes()), cIdx(b, 0),
              Value());
          tmaLoad(b, qMap, barriers, 0, 0, BQ, D, qkSwizzle, q0, hIdx);
          // (The count of tiles issued, which picks buffers and parities.)
          walkKeyTilesCarrying(
              b, loc, tileBegin, numTiles, ValueRange{cIdx(b, 0)},
              [&](OpBuilder &b, Value t) { return classifyAt(b, t); },
              [&](OpBuilder &b, Value t, Value cls,
                  ValueRange iter) -> SmallVector<Value> {
                Value n = iter[0];
                Value buffer = bufferOf(b, n);
                nvgpu::MBarrierTryWaitParityOp::create(
                    b, loc, barriers, useParity(b, n, true), ticks,
                    add(b, buffer, 3));
                Value full = add(b, buffer, 1);
                nvgpu::MBarrierArriveExpectTxOp::create(
                    b, loc, barriers, cIdx(b, kvBytes), full, Value());
                Value k0 = arith::MulIOp::create(b, loc, t, cIdx(b, BK));
                // Buffer offsets depend on the buffer: two branches
                // keep every view's offset static.
                auto load = [&](OpBuilder &b, int64_t which,
                                llvm::function_ref<bool(int64_t)> issuesBox,
                                Value multicast) {
                  tmaLoad(b, kMap, barriers, 1 + which,
                          layout.kOffset + which * kTile, BK, D, qkSwizzle,
                          k0, hkvIdx, issuesBox, multicast);
                  tmaLoad(b, vMap, barriers, 1 + which,
                          layout.vOffset + which * vTile, BK, Dv, vSwizzle,
                          k0, hkvIdx,
                          issuesBox ? [&](int64_t a) {
                            return issuesBox(kBoxes + a);
                          } : llvm::function_ref<bool(int64_t)>(),
                          multicast);
                };
                for (int64_t which = 0; which < 2; ++which) {
                  Value isThis = arith::CmpIOp::create(
                      b, loc, arith::CmpIPredicate::eq, buffer, cIdx(b, which));
                  scf::IfOp::create(b, loc, isThis, [&](OpBuilder &b,
                                                        Location) {
                    if (clusterCtas == 1) {
                      load(b, which, nullptr, Value());
                      scf::YieldOp::create(b, loc);
                      return;
                    }
                    // In a cluster, CTA r loads the tile's boxes
                    // r, r + C, ... (K's, then V's) into every CTA.
                    Value mask = arith::ConstantIntOp::create(
                        b, loc, (1 << clusterCtas) - 1, 16);
                    for (int64_t r = 0; r < clusterCtas; ++r) {
                      Value isRank = arith::CmpIOp::create(
                          b, loc, arith::CmpIPredicate::eq, rank, cI32(b, r));
                      scf::IfOp::create(b, loc, isRank,
                                        [&](OpBuilder &b, Location) {
                                          load(b, which,
                                               [&](int64_t box) {
                                                 return box % clusterCtas == r;
                                               },
                                               mask);
                                          scf::YieldOp::create(b, loc);
                                        });
                    }
                    scf::YieldOp::create(b, loc);
                  });
                }
                return {add(b, n, 1)};
              });
          scf::YieldOp::create(b, loc);
        });
        scf::YieldOp::create(b, loc);
      });
  // No CTA leaves while another may still arrive on its barriers (the
  // consumers' last releases) or copy into its shared memory.
  if (clusterCtas > 1)
    clusterBarrier(b);
}

/// barrier.cluster.arrive (release) and .wait (acquire) by every thread of
/// the cluster; not .aligned, since the producer's warp reaches it
/// diverged.
void GpuAttentionBuilder::clusterBarrier(OpBuilder &b) {
  NVVM::ClusterArriveOp::create(b, loc, UnitAttr());
  NVVM::ClusterWaitOp::create(b, loc, UnitAttr());
}

} // namespace mlir::attn::nvptx::kernel
