//===- AMDGPUKernel.cpp - attn.attention as an MFMA kernel for CDNA -------===//
//
// FlashAttention-2 on CDNA matrix cores (f16/bf16 in, f32 accumulate,
// `v_mfma_f32_16x16x16` per wave of 64 lanes):
//
//   one workgroup of 4 waves per (64 rows, query head(s), batch, split
//   part), rows as on NVIDIA (64 queries of one head, or `pack` query heads
//   of one K/V head for short query blocks); each wave owns 16 rows;
//   per key tile of the workgroup's part (skipped when the classifier says
//   EMPTY):
//     the tile's K and V rows were loaded into registers during the
//     previous tile's math (16 bytes per thread and step, zero past Skv,
//     through the page table when paged, at the listed positions for
//     kv_index); they are written to LDS, K row-major and V transposed
//     S^T = K Q^T in MFMA accumulators (BK x 16 per wave); for int8/int4
//     (and fp8 on gfx942/gfx950) codes whose token groups cover the tile,
//     K stays codes in LDS and meets Q rounded per query and tile on the
//     integer (fp8) matrix cores
//     score/mask regions per accumulator element (the mask only on
//     PARTIAL tiles), column max across the 4 lane groups sharing a query
//     O^T = V^T P^T, P^T taken from the S^T accumulators as they are
//   o = O / l, lse = (m + log2 l) ln 2, or under split-KV each part's
//   normalized partials for the merge kernel.
//
// Computing the transposes makes every lane own one query: MFMA 16x16x16
// gives lane l the A elements [l % 16][4 (l / 16) + j], the B elements
// [4 (l / 16) + j][l % 16] and the accumulator elements
// [4 (l / 16) + i][l % 16]. With A = K (keys x D) and B = Q^T, lane l
// holds keys 4 (l / 16) + i of query l % 16, which is exactly the B operand
// layout of P^T in O^T = V^T P^T, and its O^T accumulators are columns
// 4 (l / 16) + i of that same query: the running max, row sum and rescale
// factor are one value per lane, and only the max and the final sum cross
// lanes (the 4 lane groups, by shuffles).
//
//===----------------------------------------------------------------------===//
#include "lib/Target/AMDGPU/AMDGPUTarget.h"

#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/AMDGPU/IR/AMDGPUDialect.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/ROCDLDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <cmath>

using namespace mlir;
using namespace mlir::attn;
using namespace mlir::attn::gpukernel;

namespace {

constexpr int64_t kWaveSize = 64;
constexpr int64_t kWaves = 4;
constexpr int64_t kThreads = kWaveSize * kWaves;
constexpr int64_t kRowsPerWave = 16;
constexpr int64_t kRows = kWaves * kRowsPerWave;
// LDS rows are padded by 8 bytes so the 16 rows one MFMA operand load
// touches spread over the banks.
constexpr int64_t kPad = 4;
// Elements per 16-byte global load.
constexpr int64_t kChunk = 8;

/// Whether Q.K runs on K's codes on the matrix cores: int8 (int4 ones
/// unpacked to bytes) on the integer ones, fp8 on the fp8 ones (gfx942,
/// gfx950; gfx90a has none). K's scales fold into Q per key tile, so every
/// key of a tile must share one token group (no kv_index; groups whole
/// multiples of the tile).
bool codesFeedQK(AttentionOp op, const rocm::KernelConfig &cfg) {
  return keyScalesFoldPerTile(op, cfg.blockKV) &&
         (!isFp8(*op.getKvQuant()) || cfg.chip != "gfx90a");
}

class MfmaAttentionBuilder : public KernelBase {
public:
  MfmaAttentionBuilder(AttentionOp op, const rocm::KernelConfig &cfg,
                       IRMapping outside)
      : KernelBase(op, std::move(outside), kRows, cfg.blockKV),
        codesQK(codesFeedQK(op, cfg)),
        // v_mfma_i32_16x16x32_i8 from gfx942 on; gfx90a has 16x16x16.
        codeStep(cfg.chip == "gfx90a" ? 16 : 32),
        // gfx942's fp8 MFMA and conversions use the FNUZ formats; gfx950
        // the OCP ones the cache holds.
        fnuz(cfg.chip == "gfx942") {}

  void emit(OpBuilder &b, gpu::GPUFuncOp func);

private:
  VectorType vec(int64_t n, Type t) { return VectorType::get({n}, t); }
  Value splat(OpBuilder &b, VectorType type, Value x) {
    return vector::BroadcastOp::create(b, loc, type, x);
  }
  Value zeros(OpBuilder &b, VectorType type) {
    return arith::ConstantOp::create(b, loc, type, b.getZeroAttr(type));
  }
  Value mfma(OpBuilder &b, Value a, Value bOp, Value c, int64_t k = 16) {
    return amdgpu::MFMAOp::create(b, loc, c.getType(), 16, 16, k, 1, a, bOp,
                                  c)
        .getResult();
  }
  /// The lane's query times K's scales of the tile's group, rounded to
  /// int8 with one scale per query (rowScale): per codeStep columns of D,
  /// the MFMA B operand (codeStep / 4 bytes from column codeStep / 4 grp).
  SmallVector<Value> quantizedQuery(OpBuilder &b, Value k0, Value &rowScale);
  /// S^T = K Q^T for the tile in LDS, one vector of 4 keys per 16.
  SmallVector<Value> keyQueryScores(OpBuilder &b);
  /// Sum or max of x over the 4 lane groups that share a query.
  Value acrossGroups(OpBuilder &b, Value x, bool isMax);

  /// Chunk c of a key tile: (tile row, first column). K goes row by row
  /// (one row's chunks to consecutive threads), V column block by column
  /// block (consecutive rows to consecutive threads, so the transposed
  /// LDS writes of neighbouring lanes are neighbouring addresses).
  std::pair<Value, Value> chunkAt(OpBuilder &b, Value c, bool key);
  int64_t chunks(bool key) const { return BK * (key ? D : Dv) / kChunk; }
  int64_t steps(bool key) const {
    return (chunks(key) + kThreads - 1) / kThreads;
  }
  /// This thread's chunks of the tile at k0, K's then V's.
  SmallVector<Value> loadTile(OpBuilder &b, Value k0);
  SmallVector<Value> zeroTile(OpBuilder &b);
  /// A register chunk: 8 elements, or for quantized K/V their raw codes
  /// (8 bytes; 4 for int4).
  VectorType chunkType(OpBuilder &b) {
    if (!quant)
      return vec(kChunk, elt);
    return vec(*quant == KVQuant::int4 ? kChunk / 2 : kChunk, b.getI8Type());
  }
  /// Writes loadTile's registers for the tile at k0 to LDS (K row-major,
  /// V transposed), dequantized on the way when quantized (K kept as codes
  /// with codesQK).
  void storeTile(OpBuilder &b, Value k0, ValueRange regs);
  /// The tile's S^T, softmax update and O^T += V^T P^T; `state` is
  /// (m, l, O^T accumulators...).
  SmallVector<Value> computeTile(OpBuilder &b, Value k0, Value cls,
                                 ValueRange state);
  SmallVector<Value> scores(OpBuilder &b, ArrayRef<Value> s, Value k0,
                            bool withMask);
  void epilogue(OpBuilder &b, ValueRange state);

  Value kS, vT; // LDS: K [BK, D + pad] (codes with codesQK), V^T [Dv, BK + pad]
  Value tid, col, grp;
  Value head, query, head32, query32, queryValid;
  SmallVector<Value> qFrag; // Q^T B operands, one per 16 columns of D
  // Q.K on K's codes: the lane's query as f32, codeStep / 4 columns from
  // column codeStep / 4 grp of each codeStep of D.
  bool codesQK;
  int64_t codeStep;
  bool fnuz;
  /// The MLIR type of the fp8 codes of `kind` as this chip's MFMA reads
  /// them.
  Type fp8Type(OpBuilder &b, KVQuant kind) {
    if (kind == KVQuant::fp8e4m3)
      return fnuz ? Type(b.getType<Float8E4M3FNUZType>())
                  : Type(b.getType<Float8E4M3FNType>());
    return fnuz ? Type(b.getType<Float8E5M2FNUZType>())
                : Type(b.getType<Float8E5M2Type>());
  }
  SmallVector<Value> qRaw;
};

Value MfmaAttentionBuilder::acrossGroups(OpBuilder &b, Value x, bool isMax) {
  for (int32_t offset : {16, 32}) {
    Value other = gpu::ShuffleOp::create(b, loc, x, offset, kWaveSize,
                                         gpu::ShuffleMode::XOR)
                      .getShuffleResult();
    x = isMax ? arith::MaximumFOp::create(b, loc, x, other).getResult()
              : arith::AddFOp::create(b, loc, x, other).getResult();
  }
  return x;
}

std::pair<Value, Value> MfmaAttentionBuilder::chunkAt(OpBuilder &b, Value c,
                                                      bool key) {
  if (key) {
    Value perRow = cIdx(b, D / kChunk);
    return {arith::DivUIOp::create(b, loc, c, perRow),
            arith::MulIOp::create(b, loc,
                                  arith::RemUIOp::create(b, loc, c, perRow),
                                  cIdx(b, kChunk))};
  }
  return {arith::RemUIOp::create(b, loc, c, cIdx(b, BK)),
          arith::MulIOp::create(
              b, loc, arith::DivUIOp::create(b, loc, c, cIdx(b, BK)),
              cIdx(b, kChunk))};
}

SmallVector<Value> MfmaAttentionBuilder::loadTile(OpBuilder &b, Value k0) {
  SmallVector<Value> regs;
  VectorType type = chunkType(b);
  Value zero = zeros(b, type);
  for (bool key : {true, false}) {
    Value src = key ? k : v;
    for (int64_t s = 0; s < steps(key); ++s) {
      Value c = add(b, tid, s * kThreads);
      Value inRange;
      if ((s + 1) * kThreads > chunks(key)) { // the tile's last, partial step
        inRange = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, c,
                                        cIdx(b, chunks(key)));
        c = arith::MinUIOp::create(b, loc, c, cIdx(b, chunks(key) - 1));
      }
      auto [row, column] = chunkAt(b, c, key);
      KeyRow r = keyRow(b, arith::AddIOp::create(b, loc, k0, row), src);
      Value valid = inRange ? arith::AndIOp::create(b, loc, r.valid, inRange)
                                  .getResult()
                            : r.valid;
      // int4 codes: two per byte.
      Value at = quant && *quant == KVQuant::int4
                     ? arith::DivUIOp::create(b, loc, column, cIdx(b, 2))
                           .getResult()
                     : column;
      Value x = vector::LoadOp::create(b, loc, type, src,
                                       ValueRange{r.outer, hkvIdx, r.row, at});
      regs.push_back(arith::SelectOp::create(b, loc, valid, x, zero));
    }
  }
  return regs;
}

SmallVector<Value> MfmaAttentionBuilder::zeroTile(OpBuilder &b) {
  return SmallVector<Value>(steps(true) + steps(false),
                            zeros(b, chunkType(b)));
}

void MfmaAttentionBuilder::storeTile(OpBuilder &b, Value k0,
                                     ValueRange regs) {
  size_t next = 0;
  for (bool key : {true, false})
    for (int64_t s = 0; s < steps(key); ++s) {
      Value x = regs[next++];
      Value c = add(b, tid, s * kThreads);
      auto store = [&](OpBuilder &b) {
        auto [row, column] = chunkAt(b, c, key);
        if (key && codesQK) {
          if (*quant == KVQuant::int4) // sign-extended nibbles, low first
            x = unpackInt4(b, x);
          if (isFp8(*quant) && fnuz) {
            // OCP bits read as FNUZ are half the value (bias one higher),
            // which the row scale makes up for, except OCP's -0 (0x80):
            // FNUZ's NaN, so it becomes +0.
            VectorType bytes = vec(kChunk, b.getI8Type());
            Value negZero = splat(
                b, bytes, arith::ConstantIntOp::create(b, loc, -128, 8));
            x = arith::SelectOp::create(
                b, loc,
                arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, x,
                                      negZero),
                zeros(b, bytes), x);
          }
        } else if (quant) {
          x = dequantizeChunk(
              b, x, scalePosition(b, arith::AddIOp::create(b, loc, k0, row)),
              column, key);
        }
        if (key) {
          vector::StoreOp::create(b, loc, x, kS, ValueRange{row, column});
          return;
        }
        for (int64_t e = 0; e < kChunk; ++e)
          memref::StoreOp::create(
              b, loc, vector::ExtractOp::create(b, loc, x, e), vT,
              ValueRange{add(b, column, e), row});
      };
      if ((s + 1) * kThreads <= chunks(key)) {
        store(b);
        continue;
      }
      Value inRange = arith::CmpIOp::create(
          b, loc, arith::CmpIPredicate::ult, c, cIdx(b, chunks(key)));
      scf::IfOp::create(b, loc, inRange, [&](OpBuilder &b, Location) {
        store(b);
        scf::YieldOp::create(b, loc);
      });
    }
}

SmallVector<Value> MfmaAttentionBuilder::scores(OpBuilder &b,
                                                ArrayRef<Value> s, Value k0,
                                                bool withMask) {
  SmallVector<Value> out;
  Value keyBase = arith::AddIOp::create(
      b, loc, k0, arith::MulIOp::create(b, loc, grp, cIdx(b, 4)));
  for (auto [nb, frag] : llvm::enumerate(s))
    for (int64_t i = 0; i < 4; ++i) {
      Value slot = add(b, keyBase, int64_t(nb) * 16 + i);
      auto [kv32, keep] = keyPosition(b, slot);
      out.push_back(scoreEntry(b, vector::ExtractOp::create(b, loc, frag, i),
                               head32, query32, kv32, keep, withMask));
    }
  return out;
}

SmallVector<Value> MfmaAttentionBuilder::quantizedQuery(OpBuilder &b,
                                                        Value k0,
                                                        Value &rowScale) {
  Type f32 = b.getF32Type();
  int64_t width = codeStep / 4;
  VectorType lanes = vec(width, f32);
  Value group = arith::DivUIOp::create(b, loc, scalePosition(b, k0),
                                       cIdx(b, *op.getKvGroup()));
  Value firstColumn = arith::MulIOp::create(b, loc, grp, cIdx(b, width));
  SmallVector<Value> x;
  Value amax = cF32(b, 0.0);
  for (int64_t kc = 0; kc < D / codeStep; ++kc) {
    Value scales = vector::LoadOp::create(
        b, loc, lanes, kScale,
        ValueRange{bIdx, hkvIdx, group, add(b, firstColumn, kc * codeStep)});
    x.push_back(arith::MulFOp::create(b, loc, qRaw[kc], scales));
    amax = arith::MaximumFOp::create(
        b, loc, amax,
        vector::ReductionOp::create(b, loc, vector::CombiningKind::MAXIMUMF,
                                    math::AbsFOp::create(b, loc, x.back())));
  }
  amax = acrossGroups(b, amax, true);
  // A query of zeros (past Sq) keeps zero codes and scale.
  Value nonzero = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT,
                                        amax, cF32(b, 0.0));
  bool fp8 = isFp8(*quant);
  // int8: 127 levels; e4m3: its largest finite value (448 OCP, 240 FNUZ).
  double maxCode = !fp8 ? 127.0 : fnuz ? 240.0 : 448.0;
  Value inv = arith::SelectOp::create(
      b, loc, nonzero, arith::DivFOp::create(b, loc, cF32(b, maxCode), amax),
      cF32(b, 0.0));
  rowScale = arith::MulFOp::create(b, loc, amax, cF32(b, 1.0 / maxCode));
  if (fp8 && fnuz) // K's OCP codes read as FNUZ are half their value
    rowScale = arith::MulFOp::create(b, loc, rowScale, cF32(b, 2.0));
  SmallVector<Value> codes;
  if (fp8) {
    // e4m3, four at a time by the hardware's round-to-nearest conversion.
    Type qType = fp8Type(b, KVQuant::fp8e4m3);
    for (Value v : x) {
      Value y = arith::MulFOp::create(b, loc, v, splat(b, lanes, inv));
      SmallVector<Value> quads;
      for (int64_t q4 = 0; q4 < width; q4 += 4) {
        Value packed;
        for (int64_t word = 0; word < 2; ++word) {
          auto at = [&](int64_t e) {
            return vector::ExtractOp::create(b, loc, y, q4 + 2 * word + e)
                .getResult();
          };
          packed = amdgpu::PackedTrunc2xFp8Op::create(
              b, loc, vec(4, qType), at(0), at(1), word, packed);
        }
        quads.push_back(packed);
      }
      codes.push_back(vector::ShuffleOp::create(
          b, loc, quads[0], quads[1],
          ArrayRef<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}));
    }
    return codes;
  }
  for (Value v : x) {
    Value rounded = math::RoundEvenOp::create(
        b, loc, arith::MulFOp::create(b, loc, v, splat(b, lanes, inv)));
    codes.push_back(arith::TruncIOp::create(
        b, loc, vec(width, b.getI8Type()),
        arith::FPToSIOp::create(b, loc, vec(width, b.getI32Type()), rounded)));
  }
  return codes;
}

SmallVector<Value> MfmaAttentionBuilder::computeTile(OpBuilder &b, Value k0,
                                                     Value cls,
                                                     ValueRange state) {
  VectorType acc = vec(4, b.getF32Type()), operand = vec(4, elt);
  Value fourGrp = arith::MulIOp::create(b, loc, grp, cIdx(b, 4));
  SmallVector<Value> s;
  if (codesQK) {
    // S^T = rowScale (K codes . Q codes), 16 keys per accumulator.
    Value rowScale;
    SmallVector<Value> qCodes = quantizedQuery(b, k0, rowScale);
    int64_t width = codeStep / 4;
    bool fp8 = isFp8(*quant);
    Value firstByte = arith::MulIOp::create(b, loc, grp, cIdx(b, width));
    VectorType sums = fp8 ? acc : vec(4, b.getI32Type());
    for (int64_t nb = 0; nb < BK / 16; ++nb) {
      Value sum = zeros(b, sums);
      Value row = add(b, col, nb * 16);
      for (int64_t kc = 0; kc < D / codeStep; ++kc) {
        Value a = vector::LoadOp::create(
            b, loc, vec(width, b.getI8Type()), kS,
            ValueRange{row, add(b, firstByte, kc * codeStep)});
        if (fp8)
          a = vector::BitCastOp::create(
              b, loc, vec(width, fp8Type(b, *quant)), a);
        sum = mfma(b, a, qCodes[kc], sum, codeStep);
      }
      Value scores = fp8 ? sum : arith::SIToFPOp::create(b, loc, acc, sum);
      s.push_back(
          arith::MulFOp::create(b, loc, scores, splat(b, acc, rowScale)));
    }
  } else {
    // S^T = K Q^T, 16 keys per accumulator.
    for (int64_t nb = 0; nb < BK / 16; ++nb) {
      Value sum = zeros(b, acc);
      Value row = add(b, col, nb * 16);
      for (int64_t kc = 0; kc < D / 16; ++kc) {
        Value a = vector::LoadOp::create(
            b, loc, operand, kS, ValueRange{row, add(b, fourGrp, kc * 16)});
        sum = mfma(b, a, qFrag[kc], sum);
      }
      s.push_back(sum);
    }
  }

  SmallVector<Value> t =
      scoresMaskedWhereNeeded(b, cls, [&](OpBuilder &b, bool withMask) {
        return scores(b, s, k0, withMask);
      });

  Value m = state[0], l = state[1];
  SmallVector<Value> out(state.begin() + 2, state.end());
  SmallVector<Value> p = t;
  if (hasRunningMax(norm)) {
    Value mx = m;
    for (Value x : t)
      mx = arith::MaximumFOp::create(b, loc, mx, x);
    mx = acrossGroups(b, mx, true);
    // Nothing kept yet: exponentiate against 0, never -inf - -inf.
    Value none = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, mx,
                                       cF32(b, -INFINITY));
    Value mUse = arith::SelectOp::create(b, loc, none, cF32(b, 0.0), mx);
    Value alpha = math::Exp2Op::create(
        b, loc, arith::SubFOp::create(b, loc, m, mUse));
    l = arith::MulFOp::create(b, loc, l, alpha);
    for (Value &x : p) {
      x = math::Exp2Op::create(b, loc,
                               arith::SubFOp::create(b, loc, x, mUse));
      l = arith::AddFOp::create(b, loc, l, x);
    }
    m = mx;
    Value alphas = splat(b, acc, alpha);
    for (Value &o : out)
      o = arith::MulFOp::create(b, loc, o, alphas);
  } else if (hasRowSum(norm)) { // softplus: l += p
    for (Value x : p)
      l = arith::AddFOp::create(b, loc, l, x);
  }

  // O^T += V^T P^T: P^T's B operand for keys 16 kc.. is accumulator kc.
  for (int64_t kc = 0; kc < BK / 16; ++kc) {
    SmallVector<Value> four;
    for (int64_t i = 0; i < 4; ++i)
      four.push_back(arith::TruncFOp::create(b, loc, elt, p[kc * 4 + i]));
    Value bP = vector::FromElementsOp::create(b, loc, operand, four);
    for (int64_t db = 0; db < Dv / 16; ++db) {
      Value a = vector::LoadOp::create(
          b, loc, operand, vT,
          ValueRange{add(b, col, db * 16), add(b, fourGrp, kc * 16)});
      out[db] = mfma(b, a, bP, out[db]);
    }
  }
  SmallVector<Value> next = {m, l};
  next.append(out.begin(), out.end());
  return next;
}

void MfmaAttentionBuilder::epilogue(OpBuilder &b, ValueRange state) {
  Type f32 = b.getF32Type();
  Value l = acrossGroups(b, state[1], false);
  auto [rowLse, inv] = finishRow(b, state[0], l);
  Type outElt = cast<MemRefType>(o.getType()).getElementType();
  Value split = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ugt,
                                      parts, cIdx(b, 1));
  Value firstGroup =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, grp, cIdx(b, 0));
  Value fourGrp = arith::MulIOp::create(b, loc, grp, cIdx(b, 4));
  SmallVector<Value> values;
  Value invs = splat(b, vec(4, f32), inv);
  for (Value acc : state.drop_front(2))
    values.push_back(arith::MulFOp::create(b, loc, acc, invs));
  auto storeRow = [&](OpBuilder &b, Value mem, Value lseMem,
                      ArrayRef<Value> at, Type type) {
    for (auto [db, x] : llvm::enumerate(values)) {
      Value y = x;
      if (type != f32)
        y = arith::TruncFOp::create(b, loc, vec(4, type), x);
      SmallVector<Value> idx(at.begin(), at.end());
      idx.push_back(add(b, fourGrp, int64_t(db) * 16));
      // The runtime guarantees o two-element alignment (checkGpuLayout):
      // stores of element pairs rather than single elements.
      vector::StoreOp::create(b, loc, y, mem, idx, /*nontemporal=*/false,
                              llvm::Align(2 * type.getIntOrFloatBitWidth() /
                                          8));
    }
    if (!lseMem)
      return;
    scf::IfOp::create(b, loc, firstGroup, [&](OpBuilder &b, Location) {
      memref::StoreOp::create(b, loc, rowLse, lseMem, at);
      scf::YieldOp::create(b, loc);
    });
  };
  bool rowSum = hasRowSum(norm);
  scf::IfOp::create(b, loc, queryValid, [&](OpBuilder &b, Location) {
    scf::IfOp::create(
        b, loc, split,
        [&](OpBuilder &b, Location) {
          // This part's normalized O and log-sum, combined by the merge
          // kernel.
          storeRow(b, oPart, lsePart, {part, bIdx, head, query}, f32);
          scf::YieldOp::create(b, loc);
        },
        [&](OpBuilder &b, Location) {
          storeRow(b, o, lse && rowSum ? lse : Value(), {bIdx, head, query},
                   outElt);
          scf::YieldOp::create(b, loc);
        });
    scf::YieldOp::create(b, loc);
  });
}

void MfmaAttentionBuilder::emit(OpBuilder &b, gpu::GPUFuncOp func) {
  kS = func.getWorkgroupAttributions()[0];
  vT = func.getWorkgroupAttributions()[1];
  setUp(b, func, /*extraArgs=*/0);

  tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
  Value wave = arith::DivUIOp::create(b, loc, tid, cIdx(b, kWaveSize));
  Value lane = arith::RemUIOp::create(b, loc, tid, cIdx(b, kWaveSize));
  col = arith::RemUIOp::create(b, loc, lane, cIdx(b, 16));
  grp = arith::DivUIOp::create(b, loc, lane, cIdx(b, 16));
  // This lane's query: row wave * 16 + col of the workgroup's rows.
  Value row = arith::AddIOp::create(
      b, loc, arith::MulIOp::create(b, loc, wave, cIdx(b, kRowsPerWave)), col);
  head = arith::AddIOp::create(
      b, loc, hIdx, arith::DivUIOp::create(b, loc, row, rowsPerHead));
  query = arith::AddIOp::create(
      b, loc, q0, arith::RemUIOp::create(b, loc, row, rowsPerHead));
  head32 = toI32(b, head);
  query32 = toI32(b, query);
  queryValid =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, query, seqQ);

  // Q^T operands: columns 16 kc + 4 grp .. + 3 of the lane's query, zero
  // past Sq (the launch guarantees Sq >= 1).
  {
    Value qRow = arith::MinUIOp::create(
        b, loc, query, arith::SubIOp::create(b, loc, seqQ, cIdx(b, 1)));
    Value fourGrp = arith::MulIOp::create(b, loc, grp, cIdx(b, 4));
    VectorType type = vec(4, elt);
    Value zero = zeros(b, type);
    for (int64_t kc = 0; kc < D / 16 && !codesQK; ++kc) {
      Value x = vector::LoadOp::create(
          b, loc, type, q,
          ValueRange{bIdx, head, qRow, add(b, fourGrp, kc * 16)});
      qFrag.push_back(arith::SelectOp::create(b, loc, queryValid, x, zero));
    }
    // For Q.K on codes: the lane's codeStep / 4 columns of each step, f32.
    int64_t width = codeStep / 4;
    Value firstColumn = arith::MulIOp::create(b, loc, grp, cIdx(b, width));
    for (int64_t kc = 0; kc < D / codeStep && codesQK; ++kc) {
      Value x = vector::LoadOp::create(
          b, loc, vec(width, elt), q,
          ValueRange{bIdx, head, qRow, add(b, firstColumn, kc * codeStep)});
      x = arith::SelectOp::create(b, loc, queryValid, x,
                                  zeros(b, vec(width, elt)));
      qRaw.push_back(
          arith::ExtFOp::create(b, loc, vec(width, b.getF32Type()), x));
    }
  }

  // Running max and (per-lane partial) sum; a sink logit is one extra
  // entry with p = exp(sink - m): m = sink, l = 1, counted by lane group 0.
  Value mInit = sinkMax(b, head32);
  Value lInit = cF32(b, 0.0);
  if (op.hasSink()) {
    Value counts = arith::AndIOp::create(
        b, loc,
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, grp,
                              cIdx(b, 0)),
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, part,
                              cIdx(b, 0)));
    lInit = arith::SelectOp::create(b, loc, counts, cF32(b, 1.0), lInit);
  }
  SmallVector<Value> state = {mInit, lInit};
  state.append(Dv / 16, zeros(b, vec(4, b.getF32Type())));

  // Key tiles, the next visited one's rows in flight in registers while
  // this one is computed. The class is the same for the whole workgroup,
  // so every barrier under it is reached by all threads or none.
  int64_t numRegs = steps(true) + steps(false);
  auto loadIfVisited = [&](OpBuilder &b, Value t, Value cls,
                           ValueRange otherwise) {
    auto ifOp = scf::IfOp::create(
        b, loc, isVisited(b, cls),
        [&](OpBuilder &b, Location) {
          scf::YieldOp::create(
              b, loc, loadTile(b, arith::MulIOp::create(b, loc, t, cIdx(b, BK))));
        },
        [&](OpBuilder &b, Location) {
          scf::YieldOp::create(b, loc, otherwise);
        });
    return SmallVector<Value>(ifOp.getResults());
  };
  Value firstCls = classifyAt(b, tileBegin);
  SmallVector<Value> loopInit = {firstCls};
  llvm::append_range(loopInit,
                     loadIfVisited(b, tileBegin, firstCls, zeroTile(b)));
  loopInit.append(state.begin(), state.end());
  auto loop = scf::ForOp::create(
      b, loc, tileBegin, numTiles, cIdx(b, 1), loopInit,
      [&](OpBuilder &b, Location, Value t, ValueRange iter) {
        Value cls = iter[0];
        ValueRange regs = iter.slice(1, numRegs);
        ValueRange carried = iter.drop_front(1 + numRegs);
        Value visited = isVisited(b, cls);
        scf::IfOp::create(b, loc, visited, [&](OpBuilder &b, Location) {
          // Everyone is done reading the previous tile.
          gpu::BarrierOp::create(b, loc);
          storeTile(b, arith::MulIOp::create(b, loc, t, cIdx(b, BK)), regs);
          gpu::BarrierOp::create(b, loc);
          scf::YieldOp::create(b, loc);
        });
        Value nextT = add(b, t, 1);
        Value nextCls = classifyAt(b, nextT);
        SmallVector<Value> nextRegs = loadIfVisited(b, nextT, nextCls, regs);
        Value k0 = arith::MulIOp::create(b, loc, t, cIdx(b, BK));
        auto ifOp = scf::IfOp::create(
            b, loc, visited,
            [&](OpBuilder &b, Location) {
              scf::YieldOp::create(b, loc, computeTile(b, k0, cls, carried));
            },
            [&](OpBuilder &b, Location) {
              scf::YieldOp::create(b, loc, carried);
            });
        SmallVector<Value> yield = {nextCls};
        yield.append(nextRegs.begin(), nextRegs.end());
        yield.append(ifOp.getResults().begin(), ifOp.getResults().end());
        scf::YieldOp::create(b, loc, yield);
      });
  epilogue(b, loop.getResults().drop_front(1 + numRegs));
  gpu::ReturnOp::create(b, loc);
}

} // namespace

bool rocm::isSupportedChip(StringRef chip) {
  return chip == "gfx90a" || chip == "gfx942" || chip == "gfx950";
}

int64_t rocm::ldsBytes(int64_t headDim, int64_t valueHeadDim,
                       int64_t blockKV, bool keyCodes) {
  int64_t keyTile = keyCodes ? blockKV * (headDim + 2 * kPad)
                             : 2 * blockKV * (headDim + kPad);
  return keyTile + 2 * valueHeadDim * (blockKV + kPad);
}

FailureOr<KernelInfo> rocm::buildGpuKernel(ModuleOp host, AttentionOp op,
                                           StringRef name,
                                           const KernelConfig &cfg,
                                           std::string &error) {
  int64_t D = op.getHeadDim(), Dv = op.getValueHeadDim();
  Type elt = cast<MemRefType>(op.getQuery().getType()).getElementType();
  if (!isSupportedChip(cfg.chip)) {
    error = "AMD kernels are built for CDNA chips (gfx90a, gfx942, gfx950); "
            "'" + cfg.chip + "' is not one";
    return failure();
  }
  if (failed(checkSupported(op, "matrix cores", error)))
    return failure();
  if (cfg.blockKV % 16 || cfg.blockKV < 16) {
    error = "AMD kernels take key tiles of a multiple of 16 keys";
    return failure();
  }
  MLIRContext *ctx = op.getContext();
  ctx->loadDialect<gpu::GPUDialect, amdgpu::AMDGPUDialect, ROCDL::ROCDLDialect,
                   LLVM::LLVMDialect, vector::VectorDialect, scf::SCFDialect,
                   math::MathDialect, memref::MemRefDialect,
                   arith::ArithDialect>();
  OpBuilder b(ctx);
  Location loc = op.getLoc();
  host->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                b.getUnitAttr());
  b.setInsertionPointToEnd(host.getBody());
  auto gpuModule = gpu::GPUModuleOp::create(b, loc, "attn_gpu");
  if (gpuModule.getBodyRegion().empty())
    gpuModule.getBodyRegion().emplaceBlock();
  b.setInsertionPointToStart(&gpuModule.getBodyRegion().front());

  KernelSignature signature = kernelSignature(op);
  IRMapping outside;
  gpu::GPUFuncOp func =
      createKernelFunc(b, op, name, signature.types, signature.opValues,
                       int32_t(kThreads), outside);
  auto lds = gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup);
  // K's codes feeding Q.K stay bytes (rows padded by the same 8 bytes).
  bool codes = codesFeedQK(op, cfg);
  func.addWorkgroupAttribution(
      MemRefType::get({cfg.blockKV, codes ? D + 2 * kPad : D + kPad},
                      codes ? Type(b.getI8Type()) : elt,
                      MemRefLayoutAttrInterface{}, lds),
      loc);
  func.addWorkgroupAttribution(
      MemRefType::get({Dv, cfg.blockKV + kPad}, elt,
                      MemRefLayoutAttrInterface{}, lds),
      loc);
  OpBuilder body(ctx);
  body.setInsertionPointToStart(&func.getBody().front());
  MfmaAttentionBuilder builder(op, cfg, outside);
  builder.emit(body, func);

  buildMergeKernel(b, op, (name + "_merge").str());

  KernelInfo info;
  if (op.hasSelect()) {
    auto [pool, select] = buildSelectKernels(b, op, name, signature);
    info.selectPoolName = pool.getName().str();
    info.selectName = select.getName().str();
  }
  info.name = name.str();
  info.mergeName = (name + "_merge").str();
  info.blockThreads = kThreads;
  info.rowsPerBlock = kRows;
  info.sharedBytes = 0; // static LDS, in the code object
  info.blockKV = cfg.blockKV;
  return info;
}

FailureOr<BackwardKernels>
rocm::buildGpuBackwardKernels(ModuleOp host, AttentionOp op, StringRef name,
                              const KernelConfig &cfg, std::string &error) {
  if (!isSupportedChip(cfg.chip)) {
    error = "AMD kernels are built for CDNA chips (gfx90a, gfx942, gfx950); "
            "'" + cfg.chip + "' is not one";
    return failure();
  }
  BackwardConfig bwd;
  bwd.units = "matrix cores";
  // One thread per row: a workgroup narrower than a wave is one partial
  // wave (its other lanes idle either way), and the accumulators ([threads,
  // D + Dv] f32) stay within the 64 KiB of LDS at D = Dv = 128.
  bwd.minThreads = 1;
  // The gradients of f32 params and captured tensors: a slab per thread,
  // summed by the runtime (GpuCode::backwardGradients).
  bwd.gradients = true;
  return buildBackwardKernels(host, op, name, bwd, error);
}
