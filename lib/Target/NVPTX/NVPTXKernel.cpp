//===- NVPTXKernel.cpp - attn.attention as a tensor-core CUDA kernel ------===//
//
// FlashAttention-2 on tensor cores (f16/bf16 in, f32 accumulate): on sm_80
// `mma.sync.m16n8k16` per warp; on sm_90a `wgmma.mma_async.m64nNk16` per
// warpgroup (the CTA's 4 warps), whose accumulator and A-register layouts
// are the mma.sync ones stacked over the 4 warps, so everything between
// the two matmuls is shared:
//
//   one CTA of 4 warps per (query tile of 64 rows, query head, batch);
//   Q tile staged in shared memory once, each warp owns 16 of its rows;
//   per key tile (skipped when the mask classifier says EMPTY):
//     K and V tiles -> shared memory (16-byte vector loads, zero past Skv)
//     S = Q K^T in mma accumulators (16 x BK per warp)
//     score/mask regions per accumulator element (the mask only on
//     PARTIAL tiles), row max across the 4 lanes sharing a row
//     (shuffles), p = exp2(t - m), O *= exp2(m_old - m)
//     O += P V, P reused from the accumulators as the A operand
//   o = O / l (l summed across the quad), lse = (m + log2 l) ln 2.
//
// Fragment layouts (PTX ISA, mma.m16n8k16): lane l holds rows l/4 and
// l/4 + 8 and columns 2 (l % 4) + {0, 1} (+ 8 for A's upper half) of A and
// C; B (k x n) holds k = 2 (l % 4) + {0, 1} (+ 8) of column n = l/4.
//
// wgmma reads B (and Q as A of S = Q K^T) from shared memory through
// matrix descriptors in the no-swizzle canonical layout: 8 rows x 16 bytes
// "core matrices", stored here as 16-byte chunks indexed
// (column chunk) * rows + row. For K and Q (K-major) that makes the
// leading (K-direction) byte offset rows * 16 and the stride (8-row) offset
// 128; V is read N-major (imm-trans-b = 1) from the same layout, so its
// K direction is the key rows (LBO = 128) and N the Dv chunks
// (SBO = rows * 16). P stays in registers as the A operand of O += P V.
// Everything kept in registers is indexed statically: the per-tile code is
// fully unrolled over the fragments, and only the key-tile loop is a loop.
//
//===----------------------------------------------------------------------===//
#include "lib/Target/NVPTX/NVPTXTarget.h"

#include "lib/Transforms/RegionInliner.h"
#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <cmath>

using namespace mlir;
using namespace mlir::attn;
using mlir::attn::nvptx::bitcastPair;

namespace {

constexpr double kLog2E = 1.4426950408889634;
constexpr double kLn2 = 0.6931471805599453;
constexpr int64_t kWarps = 4;
constexpr int64_t kThreads = 32 * kWarps;
constexpr int64_t kRowsPerWarp = 16;

/// One accumulator fragment: the 4 f32 a lane holds of a 16 x 8 tile.
using Frag = std::array<Value, 4>;

class GpuAttentionBuilder {
public:
  GpuAttentionBuilder(AttentionOp op, const nvptx::KernelConfig &cfg,
                      IRMapping outside)
      : op(op), loc(op.getLoc()), regions(op, outside), outside(outside),
        D(op.getHeadDim()), Dv(op.getValueHeadDim()), BQ(kWarps * kRowsPerWarp),
        BK(cfg.blockKV), norm(op.getNormalize()),
        wgmma(nvptx::usesWgmma(cfg.chip)) {}

  void emit(OpBuilder &b, gpu::GPUFuncOp func);

private:
  // Constants and small helpers.
  Value cIdx(OpBuilder &b, int64_t v) {
    return arith::ConstantIndexOp::create(b, loc, v);
  }
  Value cI32(OpBuilder &b, int64_t v) {
    return arith::ConstantIntOp::create(b, loc, v, 32);
  }
  Value cF32(OpBuilder &b, double v) {
    return arith::ConstantFloatOp::create(b, loc, b.getF32Type(),
                                          APFloat(static_cast<float>(v)));
  }
  Value toI32(OpBuilder &b, Value index) {
    return arith::IndexCastOp::create(b, loc, b.getI32Type(), index);
  }
  Value add(OpBuilder &b, Value x, int64_t c) {
    return c == 0 ? x : arith::AddIOp::create(b, loc, x, cIdx(b, c)).getResult();
  }
  Value pack(OpBuilder &b, Value lo, Value hi);
  /// A pair of f16 is an mma operand as is; a pair of bf16 goes as i32.
  Value operand(OpBuilder &b, Value pair) {
    return isa<BFloat16Type>(elt) ? bitcastPair(b, pair) : pair;
  }
  Value loadPair(OpBuilder &b, Value mem, Value row, Value col);
  Frag mma(OpBuilder &b, ArrayRef<Value> a, ArrayRef<Value> bf,
           const Frag &c);
  Value quadReduce(OpBuilder &b, Value x, bool isMax);
  void copyTile(OpBuilder &b, Value src, Value i0, Value i1, Value rowBase,
                int64_t rows, int64_t cols, Value rowLimit, Value dst);
  Value sharedAddress(OpBuilder &b, Value mem);
  Value descriptor(OpBuilder &b, Value base, int64_t offset, int64_t lbo,
                   int64_t sbo);
  SmallVector<Value> warpgroupMma(OpBuilder &b, int64_t n, ValueRange acc,
                                  ArrayRef<SmallVector<Value>> aPerStep,
                                  ArrayRef<Value> bPerStep, bool transB);
  SmallVector<Frag> qkMmaSync(OpBuilder &b);
  void pvMmaSync(OpBuilder &b, ArrayRef<Value> p, SmallVector<Value> &next);
  SmallVector<Frag> qkWgmma(OpBuilder &b);
  void pvWgmma(OpBuilder &b, ArrayRef<Value> p, SmallVector<Value> &next);
  SmallVector<Value> emitKeyTile(OpBuilder &b, Value k0, Value cls,
                                 ValueRange carried);
  SmallVector<Value> scores(OpBuilder &b, ArrayRef<Frag> s, Value k0,
                            bool withMask);

  AttentionOp op;
  Location loc;
  RegionInliner regions;
  IRMapping outside;
  int64_t D, Dv, BQ, BK;
  Normalize norm;
  bool wgmma;
  Type elt;
  Value q, k, v, o, lse, qS, kS, vS;
  Value qAddr, kAddr, vAddr; // shared-window addresses (wgmma descriptors)
  Value seqQ, seqKV, b32, h32, bIdx, hIdx, hkvIdx, lane, quadRow, quadCol,
      rowA, sScale;
  Value qi32[2]; // the two query rows of this lane
};

Value GpuAttentionBuilder::pack(OpBuilder &b, Value lo, Value hi) {
  auto pair = VectorType::get({2}, elt);
  Value v = vector::FromElementsOp::create(
      b, loc, pair,
      ValueRange{arith::TruncFOp::create(b, loc, elt, lo),
                 arith::TruncFOp::create(b, loc, elt, hi)});
  return operand(b, v);
}

/// Two consecutive elements of a shared tile row, as an mma operand.
Value GpuAttentionBuilder::loadPair(OpBuilder &b, Value mem, Value row,
                                    Value col) {
  Value v = vector::LoadOp::create(b, loc, VectorType::get({2}, elt), mem,
                                   ValueRange{row, col});
  return operand(b, v);
}

Frag GpuAttentionBuilder::mma(OpBuilder &b, ArrayRef<Value> a,
                              ArrayRef<Value> bf, const Frag &c) {
  Type f32 = b.getF32Type();
  auto resultType = LLVM::LLVMStructType::getLiteral(b.getContext(),
                                                     {f32, f32, f32, f32});
  NVVM::MMATypes type = isa<BFloat16Type>(elt) ? NVVM::MMATypes::bf16
                                               : NVVM::MMATypes::f16;
  auto op = NVVM::MmaOp::create(
      b, loc, resultType, a, bf, ValueRange(c), ArrayRef<int64_t>{16, 8, 16},
      std::nullopt, std::nullopt,
      std::array<NVVM::MMATypes, 2>{type, type},
      std::array<NVVM::MMALayout, 2>{NVVM::MMALayout::row,
                                     NVVM::MMALayout::col});
  Frag d;
  for (int i = 0; i < 4; ++i)
    d[i] = LLVM::ExtractValueOp::create(b, loc, op.getResult(),
                                        ArrayRef<int64_t>{i});
  return d;
}

/// Max or sum over the 4 lanes that share a row.
Value GpuAttentionBuilder::quadReduce(OpBuilder &b, Value x, bool isMax) {
  for (int32_t offset : {1, 2}) {
    Value other = gpu::ShuffleOp::create(b, loc, x, offset, 32,
                                         gpu::ShuffleMode::XOR)
                      .getShuffleResult();
    x = isMax ? arith::MaximumFOp::create(b, loc, x, other).getResult()
              : arith::AddFOp::create(b, loc, x, other).getResult();
  }
  return x;
}

/// rows x cols of src[i0, i1, rowBase + r, c] into the shared tile dst,
/// 8 elements (16 bytes) per thread and step; rows at or past rowLimit are
/// zero. For wgmma, dst holds 16-byte chunks at (c / 8) * rows + r and
/// consecutive threads take consecutive rows, so each 8 threads store one
/// contiguous core matrix.
void GpuAttentionBuilder::copyTile(OpBuilder &b, Value src, Value i0, Value i1,
                                   Value rowBase, int64_t rows, int64_t cols,
                                   Value rowLimit, Value dst) {
  auto vt = VectorType::get({8}, elt);
  int64_t chunksPerRow = cols / 8;
  Value tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
  auto align = b.getI64IntegerAttr(16);
  scf::ForOp::create(
      b, loc, tid, cIdx(b, rows * chunksPerRow), cIdx(b, kThreads),
      ValueRange{}, [&](OpBuilder &b, Location, Value c, ValueRange) {
        Value row, chunk;
        if (wgmma) {
          row = arith::RemUIOp::create(b, loc, c, cIdx(b, rows));
          chunk = arith::DivUIOp::create(b, loc, c, cIdx(b, rows));
        } else {
          row = arith::DivUIOp::create(b, loc, c, cIdx(b, chunksPerRow));
          chunk = arith::RemUIOp::create(b, loc, c, cIdx(b, chunksPerRow));
        }
        Value col = arith::MulIOp::create(b, loc, chunk, cIdx(b, 8));
        Value grow = arith::AddIOp::create(b, loc, rowBase, row);
        Value inside = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult,
                                             grow, rowLimit);
        auto ifOp = scf::IfOp::create(
            b, loc, inside,
            [&](OpBuilder &b, Location) {
              Value x = vector::LoadOp::create(
                  b, loc, vt, src, ValueRange{i0, i1, grow, col},
                  /*nontemporal=*/false, align);
              scf::YieldOp::create(b, loc, x);
            },
            [&](OpBuilder &b, Location) {
              Value zero = arith::ConstantOp::create(
                  b, loc, vt, DenseElementsAttr::get(vt, b.getZeroAttr(elt)));
              scf::YieldOp::create(b, loc, zero);
            });
        SmallVector<Value> at = {row, col};
        if (wgmma)
          at = {arith::AddIOp::create(
                    b, loc,
                    arith::MulIOp::create(b, loc, chunk, cIdx(b, rows)), row),
                cIdx(b, 0)};
        vector::StoreOp::create(b, loc, ifOp.getResult(0), dst, at, false,
                                align);
        scf::YieldOp::create(b, loc);
      });
}

/// The shared-window address of a workgroup buffer, as i64.
Value GpuAttentionBuilder::sharedAddress(OpBuilder &b, Value mem) {
  Value index = memref::ExtractAlignedPointerAsIndexOp::create(b, loc, mem);
  return arith::IndexCastUIOp::create(b, loc, b.getI64Type(), index);
}

/// A wgmma matrix descriptor (PTX ISA "Matrix Descriptor Format"): start
/// address, leading and stride byte offsets, each >> 4; no swizzle.
Value GpuAttentionBuilder::descriptor(OpBuilder &b, Value base, int64_t offset,
                                      int64_t lbo, int64_t sbo) {
  auto c64 = [&](int64_t v) {
    return arith::ConstantIntOp::create(b, loc, v, 64).getResult();
  };
  Value addr = arith::AddIOp::create(b, loc, base, c64(offset));
  Value start = arith::ShRUIOp::create(
      b, loc, arith::AndIOp::create(b, loc, addr, c64(0x3FFFF)), c64(4));
  int64_t fields = ((lbo >> 4) << 16) | ((sbo >> 4) << 32);
  return arith::OrIOp::create(b, loc, start, c64(fields));
}

/// acc = sum over steps of A_s B_s on one warpgroup, as one asm statement:
/// wgmma.fence, the wgmma.mma_async chain, commit and wait. Accumulators are
/// pending between mma_async and wait_group, so no compiler-visible code may
/// run in between; keeping the whole chain in one statement guarantees it.
/// A is a descriptor (one i64) or four i32 registers per step.
SmallVector<Value>
GpuAttentionBuilder::warpgroupMma(OpBuilder &b, int64_t n, ValueRange acc,
                                  ArrayRef<SmallVector<Value>> aPerStep,
                                  ArrayRef<Value> bPerStep, bool transB) {
  int64_t nAcc = int64_t(acc.size()); // n / 2 f32 per thread
  std::string type = isa<BFloat16Type>(elt) ? "bf16" : "f16";
  std::string text, constraints;
  llvm::raw_string_ostream asmText(text), cons(constraints);
  SmallVector<Value> operands(acc.begin(), acc.end());
  for (int64_t i = 0; i < nAcc; ++i)
    cons << (i ? "," : "") << "=f";
  for (int64_t i = 0; i < nAcc; ++i)
    cons << "," << i;
  int64_t next = 2 * nAcc;
  operands.push_back(cI32(b, 1));
  cons << ",r";
  int64_t scaleOperand = next++;
  asmText << "{\n.reg .pred p;\nsetp.ne.b32 p, $" << scaleOperand
          << ", 0;\nwgmma.fence.sync.aligned;\n";
  for (size_t step = 0; step < bPerStep.size(); ++step) {
    asmText << "wgmma.mma_async.sync.aligned.m64n" << n << "k16.f32." << type
            << "." << type << " {";
    for (int64_t i = 0; i < nAcc; ++i)
      asmText << (i ? ", " : "") << "$" << i;
    asmText << "}, ";
    const SmallVector<Value> &a = aPerStep[step];
    if (a.size() == 1) {
      operands.push_back(a[0]);
      cons << ",l";
      asmText << "$" << next++;
    } else {
      asmText << "{";
      for (size_t i = 0; i < a.size(); ++i) {
        operands.push_back(a[i]);
        cons << ",r";
        asmText << (i ? ", " : "") << "$" << next++;
      }
      asmText << "}";
    }
    operands.push_back(bPerStep[step]);
    cons << ",l";
    asmText << ", $" << next++ << ", p, 1, 1";
    if (a.size() == 1)
      asmText << ", 0"; // imm-trans-a: K-major
    asmText << ", " << (transB ? 1 : 0) << ";\n";
  }
  asmText << "wgmma.commit_group.sync.aligned;\nwgmma.wait_group.sync.aligned "
             "0;\n}";
  Type f32 = b.getF32Type();
  auto resultType = LLVM::LLVMStructType::getLiteral(
      b.getContext(), SmallVector<Type>(nAcc, f32));
  auto inlineAsm = LLVM::InlineAsmOp::create(
      b, loc, resultType, operands, text, constraints,
      /*has_side_effects=*/true, /*is_align_stack=*/false,
      LLVM::tailcallkind::TailCallKind::None,
      LLVM::AsmDialectAttr::get(b.getContext(), LLVM::AsmDialect::AD_ATT),
      ArrayAttr());
  SmallVector<Value> out;
  for (int64_t i = 0; i < nAcc; ++i)
    out.push_back(LLVM::ExtractValueOp::create(b, loc, inlineAsm.getRes(),
                                               ArrayRef<int64_t>{i}));
  return out;
}

/// S = Q K^T for the key tile in shared memory, both operands through
/// descriptors, one k16 step per 16 columns of D.
SmallVector<Frag> GpuAttentionBuilder::qkWgmma(OpBuilder &b) {
  Value fzero = cF32(b, 0.0);
  SmallVector<Value> acc(BK / 2, fzero);
  SmallVector<SmallVector<Value>> aSteps;
  SmallVector<Value> bSteps;
  for (int64_t kc = 0; kc < D / 16; ++kc) {
    aSteps.push_back({descriptor(b, qAddr, 2 * kc * BQ * 16, BQ * 16, 128)});
    bSteps.push_back(descriptor(b, kAddr, 2 * kc * BK * 16, BK * 16, 128));
  }
  SmallVector<Value> d = warpgroupMma(b, BK, acc, aSteps, bSteps, false);
  SmallVector<Frag> s(BK / 8);
  for (int64_t nb = 0; nb < BK / 8; ++nb)
    for (int i = 0; i < 4; ++i)
      s[nb][i] = d[nb * 4 + i];
  return s;
}

/// O += P V: P's accumulators are the register A operand of each 16-key
/// step as they are; V is read N-major from shared memory.
void GpuAttentionBuilder::pvWgmma(OpBuilder &b, ArrayRef<Value> p,
                                  SmallVector<Value> &next) {
  SmallVector<SmallVector<Value>> aSteps;
  SmallVector<Value> bSteps;
  auto reg = [&](Value lo, Value hi) {
    Value pair = pack(b, lo, hi);
    return isa<VectorType>(pair.getType()) ? bitcastPair(b, pair) : pair;
  };
  for (int64_t kc = 0; kc < BK / 16; ++kc) {
    auto at = [&](int64_t nb, int i) { return p[nb * 4 + i]; };
    aSteps.push_back({reg(at(2 * kc, 0), at(2 * kc, 1)),
                      reg(at(2 * kc, 2), at(2 * kc, 3)),
                      reg(at(2 * kc + 1, 0), at(2 * kc + 1, 1)),
                      reg(at(2 * kc + 1, 2), at(2 * kc + 1, 3))});
    bSteps.push_back(descriptor(b, vAddr, kc * 256, 128, BK * 16));
  }
  SmallVector<Value> acc(next.begin() + 4, next.end());
  SmallVector<Value> d = warpgroupMma(b, Dv, acc, aSteps, bSteps, true);
  std::copy(d.begin(), d.end(), next.begin() + 4);
}

/// The normalizer's input for every accumulator element: masked entries
/// (and keys past Skv) are -inf for softmax, p = 0 otherwise.
SmallVector<Value> GpuAttentionBuilder::scores(OpBuilder &b, ArrayRef<Frag> s,
                                               Value k0, bool withMask) {
  SmallVector<Value> out;
  Value negInf = cF32(b, -INFINITY), fzero = cF32(b, 0.0);
  Value skv32 = toI32(b, seqKV);
  for (auto [nb, frag] : llvm::enumerate(s))
    for (int i = 0; i < 4; ++i) {
      Value col = arith::AddIOp::create(
          b, loc, arith::MulIOp::create(b, loc, quadCol, cIdx(b, 2)),
          cIdx(b, int64_t(nb) * 8 + i % 2));
      Value kv32 = toI32(b, arith::AddIOp::create(b, loc, k0, col));
      Value qi = qi32[i / 2];
      Value t = arith::MulFOp::create(b, loc, frag[i], sScale);
      if (op.hasScore()) {
        t = regions.inlineRegion(b, op.getScore(), {t, b32, h32, qi, kv32});
        if (norm == Normalize::softmax)
          t = arith::MulFOp::create(b, loc, t, cF32(b, kLog2E));
      }
      Value keep = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt,
                                         kv32, skv32);
      if (withMask)
        keep = arith::AndIOp::create(
            b, loc, keep,
            regions.inlineRegion(b, op.getMask(), {b32, h32, qi, kv32}));
      if (norm == Normalize::softmax) {
        // A -inf score is a masked entry; max() with it changes nothing.
        out.push_back(arith::SelectOp::create(b, loc, keep, t, negInf));
        continue;
      }
      Value p;
      switch (norm) {
      case Normalize::sigmoid: {
        Value e = math::ExpOp::create(b, loc, arith::NegFOp::create(b, loc, t));
        p = arith::DivFOp::create(b, loc, cF32(b, 1.0),
                                  arith::AddFOp::create(b, loc, cF32(b, 1.0), e));
        break;
      }
      case Normalize::relu:
        p = arith::MaximumFOp::create(b, loc, t, fzero);
        break;
      case Normalize::relu2: {
        Value r = arith::MaximumFOp::create(b, loc, t, fzero);
        p = arith::MulFOp::create(b, loc, r, r);
        break;
      }
      default: { // softplus
        Value pos = arith::MaximumFOp::create(b, loc, t, fzero);
        Value e = math::ExpOp::create(
            b, loc,
            arith::NegFOp::create(b, loc, math::AbsFOp::create(b, loc, t)));
        p = arith::AddFOp::create(b, loc, pos, math::Log1pOp::create(b, loc, e));
        break;
      }
      }
      out.push_back(arith::SelectOp::create(b, loc, keep, p, fzero));
    }
  return out;
}

/// S = Q K^T on mma.sync: per 16-wide slice of D, the warp's A fragment
/// once, then one mma per 8 keys.
SmallVector<Frag> GpuAttentionBuilder::qkMmaSync(OpBuilder &b) {
  Value fzero = cF32(b, 0.0);
  SmallVector<Frag> s(BK / 8, Frag{fzero, fzero, fzero, fzero});
  Value pairCol = arith::MulIOp::create(b, loc, quadCol, cIdx(b, 2));
  Value rowB = add(b, rowA, 8);
  for (int64_t kc = 0; kc < D / 16; ++kc) {
    Value c0 = add(b, pairCol, kc * 16), c1 = add(b, pairCol, kc * 16 + 8);
    Value a[4] = {loadPair(b, qS, rowA, c0), loadPair(b, qS, rowB, c0),
                  loadPair(b, qS, rowA, c1), loadPair(b, qS, rowB, c1)};
    for (int64_t nb = 0; nb < BK / 8; ++nb) {
      Value keyRow = add(b, quadRow, nb * 8);
      Value bf[2] = {loadPair(b, kS, keyRow, c0), loadPair(b, kS, keyRow, c1)};
      s[nb] = mma(b, a, bf, s[nb]);
    }
  }
  return s;
}

/// O += P V on mma.sync: P's accumulators are the A operand of a 16-key
/// slice as they are; V's B fragment is two keys apart per register.
void GpuAttentionBuilder::pvMmaSync(OpBuilder &b, ArrayRef<Value> p,
                                    SmallVector<Value> &next) {
  Value pairCol = arith::MulIOp::create(b, loc, quadCol, cIdx(b, 2));
  for (int64_t kc = 0; kc < BK / 16; ++kc) {
    auto at = [&](int64_t nb, int i) { return p[nb * 4 + i]; };
    Value a[4] = {pack(b, at(2 * kc, 0), at(2 * kc, 1)),
                  pack(b, at(2 * kc, 2), at(2 * kc, 3)),
                  pack(b, at(2 * kc + 1, 0), at(2 * kc + 1, 1)),
                  pack(b, at(2 * kc + 1, 2), at(2 * kc + 1, 3))};
    Value key0 = add(b, pairCol, kc * 16);
    for (int64_t nb = 0; nb < Dv / 8; ++nb) {
      Value col = add(b, quadRow, nb * 8);
      auto scalar = [&](Value key) {
        return memref::LoadOp::create(b, loc, vS, ValueRange{key, col})
            .getResult();
      };
      Value bf[2] = {
          operand(b, vector::FromElementsOp::create(
                         b, loc, VectorType::get({2}, elt),
                         ValueRange{scalar(key0), scalar(add(b, key0, 1))})),
          operand(b, vector::FromElementsOp::create(
                         b, loc, VectorType::get({2}, elt),
                         ValueRange{scalar(add(b, key0, 8)),
                                    scalar(add(b, key0, 9))}))};
      Frag c;
      for (int i = 0; i < 4; ++i)
        c[i] = next[4 + nb * 4 + i];
      Frag d = mma(b, a, bf, c);
      for (int i = 0; i < 4; ++i)
        next[4 + nb * 4 + i] = d[i];
    }
  }
}

/// One key tile; `carried` is (m0, m1, l0, l1, O fragments...).
SmallVector<Value> GpuAttentionBuilder::emitKeyTile(OpBuilder &b, Value k0,
                                                    Value cls,
                                                    ValueRange carried) {
  gpu::BarrierOp::create(b, loc); // the previous tile's readers are done
  copyTile(b, k, bIdx, hkvIdx, k0, BK, D, seqKV, kS);
  copyTile(b, v, bIdx, hkvIdx, k0, BK, Dv, seqKV, vS);
  if (wgmma) // generic-proxy stores, read next by the async proxy (wgmma)
    NVVM::FenceProxyOp::create(
        b, loc, NVVM::ProxyKindAttr::get(b.getContext(),
                                         NVVM::ProxyKind::async_shared),
        NVVM::SharedSpaceAttr::get(b.getContext(),
                                   NVVM::SharedSpace::shared_cta));
  gpu::BarrierOp::create(b, loc);

  Value fzero = cF32(b, 0.0);
  SmallVector<Frag> s = wgmma ? qkWgmma(b) : qkMmaSync(b);

  // Scores, with the mask only where the classifier could not decide.
  SmallVector<Value> t;
  if (op.hasMask()) {
    Value partial = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                          cls, cI32(b, kTilePartial));
    auto ifOp = scf::IfOp::create(
        b, loc, partial,
        [&](OpBuilder &b, Location) {
          scf::YieldOp::create(b, loc, scores(b, s, k0, true));
        },
        [&](OpBuilder &b, Location) {
          scf::YieldOp::create(b, loc, scores(b, s, k0, false));
        });
    t.assign(ifOp.getResults().begin(), ifOp.getResults().end());
  } else {
    t = scores(b, s, k0, false);
  }

  SmallVector<Value> next(carried.begin(), carried.end());
  SmallVector<Value> p(t.size());
  if (norm == Normalize::softmax) {
    Value alpha[2];
    for (int r = 0; r < 2; ++r) {
      Value mx = carried[r];
      for (int64_t nb = 0; nb < BK / 8; ++nb)
        for (int i = 2 * r; i < 2 * r + 2; ++i)
          mx = arith::MaximumFOp::create(b, loc, mx, t[nb * 4 + i]);
      mx = quadReduce(b, mx, true);
      // Nothing kept yet: exponentiate against 0, never -inf - -inf.
      Value none = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, mx,
                                         cF32(b, -INFINITY));
      Value mUse = arith::SelectOp::create(b, loc, none, fzero, mx);
      alpha[r] = math::Exp2Op::create(
          b, loc, arith::SubFOp::create(b, loc, carried[r], mUse));
      Value l = arith::MulFOp::create(b, loc, carried[2 + r], alpha[r]);
      for (int64_t nb = 0; nb < BK / 8; ++nb)
        for (int i = 2 * r; i < 2 * r + 2; ++i) {
          Value e = math::Exp2Op::create(
              b, loc, arith::SubFOp::create(b, loc, t[nb * 4 + i], mUse));
          p[nb * 4 + i] = e;
          l = arith::AddFOp::create(b, loc, l, e);
        }
      next[r] = mx;
      next[2 + r] = l;
    }
    for (int64_t nb = 0; nb < Dv / 8; ++nb)
      for (int i = 0; i < 4; ++i)
        next[4 + nb * 4 + i] = arith::MulFOp::create(
            b, loc, carried[4 + nb * 4 + i], alpha[i / 2]);
  } else {
    p = t;
    if (norm == Normalize::softplus)
      for (int r = 0; r < 2; ++r) {
        Value l = carried[2 + r];
        for (int64_t nb = 0; nb < BK / 8; ++nb)
          for (int i = 2 * r; i < 2 * r + 2; ++i)
            l = arith::AddFOp::create(b, loc, l, p[nb * 4 + i]);
        next[2 + r] = l;
      }
  }

  if (wgmma)
    pvWgmma(b, p, next);
  else
    pvMmaSync(b, p, next);
  return next;
}

void GpuAttentionBuilder::emit(OpBuilder &b, gpu::GPUFuncOp func) {
  Type f32 = b.getF32Type();
  q = outside.lookup(op.getQuery());
  k = outside.lookup(op.getKey());
  v = outside.lookup(op.getValue());
  o = outside.lookup(op.getOut());
  lse = op.getLse() ? outside.lookup(op.getLse()) : Value();
  elt = cast<MemRefType>(q.getType()).getElementType();
  auto wg = func.getWorkgroupAttributions();
  qS = wg[0];
  kS = wg[1];
  vS = wg[2];

  Value tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
  Value warp = arith::DivUIOp::create(b, loc, tid, cIdx(b, 32));
  lane = arith::RemUIOp::create(b, loc, tid, cIdx(b, 32));
  quadRow = arith::DivUIOp::create(b, loc, lane, cIdx(b, 4));
  quadCol = arith::RemUIOp::create(b, loc, lane, cIdx(b, 4));
  Value qTile = gpu::BlockIdOp::create(b, loc, gpu::Dimension::x);
  hIdx = gpu::BlockIdOp::create(b, loc, gpu::Dimension::y);
  bIdx = gpu::BlockIdOp::create(b, loc, gpu::Dimension::z);

  Value batch = memref::DimOp::create(b, loc, q, 0);
  Value headsQ = memref::DimOp::create(b, loc, q, 1);
  seqQ = memref::DimOp::create(b, loc, q, 2);
  Value headsKV = memref::DimOp::create(b, loc, k, 1);
  seqKV = memref::DimOp::create(b, loc, k, 2);
  Value group = arith::DivUIOp::create(
      b, loc, headsQ, arith::MaxUIOp::create(b, loc, headsKV, cIdx(b, 1)));
  hkvIdx = arith::DivUIOp::create(b, loc, hIdx, group);
  Value dims[] = {batch, headsQ, headsKV, seqQ, seqKV};
  for (int i = 0; i < 5; ++i)
    regions.sizes[i] = toI32(b, dims[i]);
  regions.sizes[static_cast<int>(Size::D)] = cI32(b, D);
  regions.sizes[static_cast<int>(Size::Dv)] = cI32(b, Dv);
  regions.computeCaptureBounds(b, loc);
  b32 = toI32(b, bIdx);
  h32 = toI32(b, hIdx);

  Value scale = op.getScale()
                    ? cF32(b, op.getScale()->convertToDouble())
                    : (op.hasScaleExpr()
                           ? regions.inlineRegion(b, op.getScaleExpr(), {})
                           : cF32(b, 1.0 / std::sqrt(double(D))));
  sScale = norm == Normalize::softmax && !op.hasScore()
               ? arith::MulFOp::create(b, loc, scale, cF32(b, kLog2E))
                     .getResult()
               : scale;

  Value q0 = arith::MulIOp::create(b, loc, qTile, cIdx(b, BQ));
  rowA = arith::AddIOp::create(
      b, loc, arith::MulIOp::create(b, loc, warp, cIdx(b, kRowsPerWarp)),
      quadRow);
  Value qiIdx[2] = {arith::AddIOp::create(b, loc, q0, rowA),
                    arith::AddIOp::create(b, loc, q0, add(b, rowA, 8))};
  qi32[0] = toI32(b, qiIdx[0]);
  qi32[1] = toI32(b, qiIdx[1]);

  copyTile(b, q, bIdx, hIdx, q0, BQ, D, seqQ, qS);
  if (wgmma) {
    qAddr = sharedAddress(b, qS);
    kAddr = sharedAddress(b, kS);
    vAddr = sharedAddress(b, vS);
  }
  gpu::BarrierOp::create(b, loc);

  // Running max and (per-lane partial) sum of both rows; a sink logit is
  // one extra entry with p = exp(sink - m): m = sink, l = 1, counted once
  // per quad.
  Value mInit = cF32(b, -INFINITY), lInit = cF32(b, 0.0);
  if (op.hasSink()) {
    Value sink = regions.inlineRegion(b, op.getSink(), {h32});
    mInit = arith::MulFOp::create(b, loc, sink, cF32(b, kLog2E));
    Value first = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                        quadCol, cIdx(b, 0));
    lInit = arith::SelectOp::create(b, loc, first, cF32(b, 1.0), lInit);
  }
  SmallVector<Value> init = {mInit, mInit, lInit, lInit};
  init.append(Dv / 8 * 4, cF32(b, 0.0));

  Value numTiles = arith::CeilDivUIOp::create(b, loc, seqKV, cIdx(b, BK));
  Value qLast = toI32(
      b, arith::SubIOp::create(
             b, loc,
             arith::MinUIOp::create(b, loc, add(b, q0, BQ), seqQ), cIdx(b, 1)));
  auto loop = scf::ForOp::create(
      b, loc, cIdx(b, 0), numTiles, cIdx(b, 1), init,
      [&](OpBuilder &b, Location, Value tIdx, ValueRange carried) {
        Value k0 = arith::MulIOp::create(b, loc, tIdx, cIdx(b, BK));
        Value cls = cI32(b, kTileFull);
        if (op.hasClassify()) {
          Value kLast = toI32(
              b, arith::SubIOp::create(
                     b, loc,
                     arith::MinUIOp::create(b, loc, add(b, k0, BK), seqKV),
                     cIdx(b, 1)));
          cls = regions.inlineRegion(
              b, op.getClassify(),
              {b32, h32, h32, toI32(b, q0), qLast, toI32(b, k0), kLast});
        }
        // The class is the same for the whole CTA, so the barriers inside
        // are reached by every thread or by none.
        Value visit = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne,
                                            cls, cI32(b, kTileEmpty));
        auto ifOp = scf::IfOp::create(
            b, loc, visit,
            [&](OpBuilder &b, Location) {
              scf::YieldOp::create(b, loc, emitKeyTile(b, k0, cls, carried));
            },
            [&](OpBuilder &b, Location) {
              scf::YieldOp::create(b, loc, carried);
            });
        scf::YieldOp::create(b, loc, ifOp.getResults());
      });

  // Epilogue: sums across the quad, o = O / l, lse.
  bool hasRowSum = norm == Normalize::softmax || norm == Normalize::softplus;
  Type outElt = cast<MemRefType>(o.getType()).getElementType();
  Value fzero = cF32(b, 0.0);
  Value pairCol = arith::MulIOp::create(b, loc, quadCol, cIdx(b, 2));
  for (int r = 0; r < 2; ++r) {
    Value m = loop.getResult(r);
    Value l = quadReduce(b, loop.getResult(2 + r), false);
    Value empty = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, l,
                                        fzero);
    Value inv = cF32(b, 1.0);
    if (hasRowSum)
      inv = arith::SelectOp::create(
          b, loc, empty, fzero,
          arith::DivFOp::create(b, loc, cF32(b, 1.0), l));
    Value inside = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult,
                                         qiIdx[r], seqQ);
    scf::IfOp::create(b, loc, inside, [&](OpBuilder &b, Location) {
      for (int64_t nb = 0; nb < Dv / 8; ++nb) {
        Value x0 = arith::MulFOp::create(
            b, loc, loop.getResult(4 + nb * 4 + 2 * r), inv);
        Value x1 = arith::MulFOp::create(
            b, loc, loop.getResult(4 + nb * 4 + 2 * r + 1), inv);
        if (outElt != f32) {
          x0 = arith::TruncFOp::create(b, loc, outElt, x0);
          x1 = arith::TruncFOp::create(b, loc, outElt, x1);
        }
        Value pair = vector::FromElementsOp::create(
            b, loc, VectorType::get({2}, outElt), ValueRange{x0, x1});
        vector::StoreOp::create(b, loc, pair, o,
                                ValueRange{bIdx, hIdx, qiIdx[r],
                                           add(b, pairCol, nb * 8)});
      }
      if (lse && hasRowSum) {
        Value first = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                            quadCol, cIdx(b, 0));
        scf::IfOp::create(b, loc, first, [&](OpBuilder &b, Location) {
          Value value =
              norm == Normalize::softmax
                  ? arith::MulFOp::create(
                        b, loc,
                        arith::AddFOp::create(b, loc, m,
                                              math::Log2Op::create(b, loc, l)),
                        cF32(b, kLn2))
                        .getResult()
                  : math::LogOp::create(b, loc, l).getResult();
          value = arith::SelectOp::create(b, loc, empty, cF32(b, -INFINITY),
                                          value);
          memref::StoreOp::create(b, loc, value, lse,
                                  ValueRange{bIdx, hIdx, qiIdx[r]});
          scf::YieldOp::create(b, loc);
        });
      }
      scf::YieldOp::create(b, loc);
    });
  }
  gpu::ReturnOp::create(b, loc);
}

} // namespace

bool mlir::attn::nvptx::usesWgmma(StringRef chip) { return chip == "sm_90a"; }

Value mlir::attn::nvptx::bitcastPair(OpBuilder &b, Value pair) {
  Location loc = pair.getLoc();
  Value word = vector::BitCastOp::create(
      b, loc, VectorType::get({1}, b.getI32Type()), pair);
  return vector::ExtractOp::create(b, loc, word, ArrayRef<int64_t>{0});
}

FailureOr<nvptx::KernelInfo>
mlir::attn::nvptx::buildGpuKernel(ModuleOp gpuModuleHost, AttentionOp op,
                                  StringRef name, const KernelConfig &cfg,
                                  std::string &error) {
  int64_t D = op.getHeadDim(), Dv = op.getValueHeadDim();
  Type elt = cast<MemRefType>(op.getQuery().getType()).getElementType();
  if (!isa<BFloat16Type, Float16Type>(elt)) {
    error = "tensor cores take f16 or bf16 inputs; compile with --dtype bf16 "
            "or --dtype f16 for GPU targets";
    return failure();
  }
  if (D % 16 || Dv % 16 || D > 128 || Dv > 128) {
    error = "GPU kernels support head dims that are multiples of 16 up to "
            "128 (got D = " + std::to_string(D) + ", Dv = " +
            std::to_string(Dv) + ")";
    return failure();
  }
  if (op.getKvQuant() || op.isPaged() || op.getKvIndex() || op.hasSelect()) {
    error = "quantized, paged and sparse K/V and select are not implemented "
            "for GPU targets yet";
    return failure();
  }
  MLIRContext *ctx = op.getContext();
  ctx->loadDialect<gpu::GPUDialect, NVVM::NVVMDialect, LLVM::LLVMDialect,
                   vector::VectorDialect, scf::SCFDialect, math::MathDialect,
                   memref::MemRefDialect, arith::ArithDialect>();
  OpBuilder b(ctx);
  Location loc = op.getLoc();
  gpuModuleHost->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                         b.getUnitAttr());
  b.setInsertionPointToEnd(gpuModuleHost.getBody());
  auto gpuModule = gpu::GPUModuleOp::create(b, loc, "attn_gpu");
  if (gpuModule.getBodyRegion().empty())
    gpuModule.getBodyRegion().emplaceBlock();
  b.setInsertionPointToStart(&gpuModule.getBodyRegion().front());

  // Arguments: q, k, v, o, [lse], params, captures (the CPU kernel's
  // leading arguments).
  SmallVector<Value> outsideValues = {op.getQuery(), op.getKey(),
                                      op.getValue(), op.getOut()};
  if (op.getLse())
    outsideValues.push_back(op.getLse());
  outsideValues.append(op.getParams().begin(), op.getParams().end());
  outsideValues.append(op.getCaptures().begin(), op.getCaptures().end());
  SmallVector<Type> argTypes;
  for (Value v : outsideValues)
    argTypes.push_back(v.getType());

  KernelConfig config = cfg;
  auto smem = gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup);
  int64_t BQ = kWarps * kRowsPerWarp;
  bool chunked = usesWgmma(config.chip);
  auto tile = [&](int64_t rows, int64_t cols) {
    SmallVector<int64_t> shape = {rows, cols};
    if (chunked) // 16-byte chunks in core-matrix order, see copyTile
      shape = {rows * cols / 8, 8};
    return MemRefType::get(shape, elt, MemRefLayoutAttrInterface{}, smem);
  };
  SmallVector<Type> workgroup = {tile(BQ, D), tile(config.blockKV, D),
                                 tile(config.blockKV, Dv)};
  auto func = gpu::GPUFuncOp::create(b, loc, name,
                                     b.getFunctionType(argTypes, {}),
                                     workgroup);
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), b.getUnitAttr());
  func.setKnownBlockSizeAttr(
      b.getDenseI32ArrayAttr({int32_t(kThreads), 1, 1}));
  func->setAttr("nvvm.maxntid",
                b.getDenseI32ArrayAttr({int32_t(kThreads), 1, 1}));
  // wgmma descriptors need 16-byte aligned core matrices; 128 also keeps
  // the tiles on distinct bank rows.
  for (unsigned i = 0; i < workgroup.size(); ++i)
    func.setWorkgroupAttributionAttr(i, LLVM::LLVMDialect::getAlignAttrName(),
                                     b.getI64IntegerAttr(128));
  IRMapping outside;
  for (auto [value, arg] : llvm::zip(outsideValues, func.getArguments()))
    outside.map(value, arg);

  if (func.getBody().empty()) {
    error = "internal: gpu.func without a body";
    return failure();
  }
  OpBuilder body(ctx);
  body.setInsertionPointToStart(&func.getBody().front());
  GpuAttentionBuilder builder(op, config, outside);
  builder.emit(body, func);

  KernelInfo info;
  info.name = name.str();
  info.blockThreads = kThreads;
  info.rowsPerBlock = BQ;
  info.sharedBytes = (BQ * D + config.blockKV * (D + Dv)) *
                     int64_t(elt.getIntOrFloatBitWidth() / 8);
  return info;
}
