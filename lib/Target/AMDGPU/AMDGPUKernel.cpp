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
//     previous tile's math (K 16 bytes per thread and step, V 4 rows of 8
//     bytes per thread: 4 keys x 4 columns; through the page table when
//     paged, at the listed positions for kv_index); nothing waits for them
//     until they are written to LDS, zeroed past Skv there, K row-major and
//     V transposed in registers (one 8-byte write of 4 keys per column)
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

#include "lib/Transforms/QueryCodes.h"
#include "lib/Transforms/RowState.h"
#include "lib/Transforms/TileWalk.h"
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
// Elements per 16-byte global load of K.
constexpr int64_t kChunk = 8;
// V goes to LDS transposed in units of 4 keys x 4 columns per thread: one
// 8-byte LDS write per column (4 keys, the 4 elements one lane's MFMA A
// operand reads) instead of one 2-byte write per element.
constexpr int64_t kUnitKeys = 4;
constexpr int64_t kUnitColumns = 4;

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
        fnuz(cfg.chip == "gfx942"), softwareBf16(cfg.chip != "gfx950") {}

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
  /// Sum, max (NaN-propagating) or rowMax of x over the 4 lane groups
  /// that share a query.
  enum class Combine { sum, max, rowMax };
  Value acrossGroups(OpBuilder &b, Value x, Combine how);
  /// The running max's step. maxnum, not maximum: a NaN score need not
  /// reach m, since its p = exp2(NaN - m) is NaN and l (the sum of every
  /// p) carries it into the row's output all the same; and maxnum is one
  /// v_max_f32 (three in a row fuse into v_max3_f32) where maximum's NaN
  /// propagation costs a compare and a select per entry.
  Value rowMax(OpBuilder &b, Value x, Value y) {
    return arith::MaxNumFOp::create(b, loc, x, y,
                                    arith::FastMathFlags::nnan);
  }

  /// K's share of a key tile is chunks of 8 elements of a row (16 bytes;
  /// one row's chunks to consecutive threads), written row-major to LDS.
  /// Chunk c: (tile row, first column).
  std::pair<Value, Value> keyChunkAt(OpBuilder &b, Value c);
  int64_t keyChunks() const { return BK * D / kChunk; }
  int64_t keySteps() const { return (keyChunks() + kThreads - 1) / kThreads; }
  /// V's share is units of kUnitKeys consecutive keys by kUnitColumns
  /// columns: a thread loads the unit's 4 rows (8 bytes each), transposes
  /// them in registers and writes 4 columns of 4 keys, one 8-byte LDS
  /// write each, to V^T. Unit u: (first key, first column).
  std::pair<Value, Value> valueUnitAt(OpBuilder &b, Value u);
  int64_t valueUnits() const { return BK * Dv / (kUnitKeys * kUnitColumns); }
  int64_t valueSteps() const {
    return (valueUnits() + kThreads - 1) / kThreads;
  }
  /// Registers a tile occupies while in flight: K's chunks, then V's rows.
  int64_t tileLoads() const { return keySteps() + valueSteps() * kUnitKeys; }
  /// Rows past Skv are zeroed when the registers are written to LDS, not
  /// when loaded, so nothing waits for the loads before then. Whether a
  /// row holds a key is recomputed there, except for kv_index (a listed
  /// position, read from memory): then the loop carries it, one bit a row.
  int64_t carriedBits() const { return kvIndex ? tileLoads() : 0; }
  /// This thread's loads of the tile at k0 (tileLoads() registers, then
  /// carriedBits() validity bits).
  SmallVector<Value> loadTile(OpBuilder &b, Value k0);
  SmallVector<Value> loadTileRows(OpBuilder &b, Value k0);
  /// Emission state: the tile being loaded or stored lies within the key
  /// slots (no kv_index), so its rows need neither clamping nor zeroing.
  bool wholeTile = false;
  /// `emit` twice, under `if (k0 + BK <= key slots)` with wholeTile set and
  /// in its else branch without (with kv_index once, without), returning
  /// the results.
  SmallVector<Value>
  splitOnWholeTile(OpBuilder &b, Value k0,
                   llvm::function_ref<SmallVector<Value>(OpBuilder &)> emit);
  /// Whether V's rows of a unit lie at fixed offsets from its first one
  /// (contiguous K/V, or pages holding whole units), so only that row's
  /// address is computed.
  bool unitRowsContiguous() {
    return !kvIndex && (!pageTable || *op.getPageSize() % kUnitKeys == 0);
  }
  /// Whether a tile's rows lie at fixed offsets from its first one
  /// (contiguous K/V: no page table, no kv_index): then a whole tile's
  /// loads are this thread's offsets, computed once before the key loop,
  /// plus k0 times the row stride (scalar), not a row index times the row
  /// stride per load and tile.
  bool tileRowsAtFixedStride() { return !kvIndex && !pageTable; }
  /// `tensor` as a 1-D view of its elements, and its strides.
  Value flatView(OpBuilder &b, Value tensor, SmallVector<Value> &strides);
  /// column + sum indices[i] strides[i].
  Value flatIndex(OpBuilder &b, ValueRange indices, ArrayRef<Value> strides,
                  Value column);
  /// The element of the K (V) row where a chunk (unit) starts: int4 codes
  /// are two per byte.
  Value rowElement(OpBuilder &b, Value column) {
    return quant && *quant == KVQuant::int4
               ? arith::DivUIOp::create(b, loc, column, cIdx(b, 2))
                     .getResult()
               : column;
  }
  /// K and V as 1-D views of their elements (kFlat for
  /// tileRowsAtFixedStride, vFlat for unitRowsContiguous) and their
  /// strides.
  Value kFlat, vFlat;
  SmallVector<Value> kStrides, vStrides;
  /// With tileRowsAtFixedStride, per load step the offset in kFlat (vFlat)
  /// of this thread's chunk (unit's first row) in the tile at key 0.
  SmallVector<Value> keyOffsets, valueOffsets;
  SmallVector<Value> zeroTile(OpBuilder &b);
  /// A register of K: 8 elements, or for quantized K their raw codes (8
  /// bytes; 4 for int4). Of V: a unit's row of 4 elements or codes (4
  /// bytes; 2 for int4).
  VectorType loadType(OpBuilder &b, bool key) {
    int64_t n = key ? kChunk : kUnitColumns;
    if (!quant)
      return vec(n, elt);
    return vec(*quant == KVQuant::int4 ? n / 2 : n, b.getI8Type());
  }
  /// Writes loadTile's registers for the tile at k0 to LDS (K row-major,
  /// V transposed), zero where no key, dequantized on the way when
  /// quantized (K kept as codes with codesQK).
  void storeTile(OpBuilder &b, Value k0, ValueRange regs);
  void storeTileRows(OpBuilder &b, Value k0, ValueRange regs);
  /// `valid`: the rows' carried validity bits (empty when recomputed).
  void storeKeyChunk(OpBuilder &b, Value k0, Value c, Value x, Value valid);
  void storeValueUnit(OpBuilder &b, Value k0, Value u, ArrayRef<Value> rows,
                      ArrayRef<Value> valid);
  /// Zero where the row at `slot` holds no key (`carried`: its bit, when
  /// the loop carries it).
  Value zeroPastKeys(OpBuilder &b, Value x, Value slot, Value carried) {
    if (wholeTile)
      return x;
    Value valid = carried ? carried
                          : arith::CmpIOp::create(b, loc,
                                                  arith::CmpIPredicate::ult,
                                                  slot, keySlots)
                                .getResult();
    return arith::SelectOp::create(b, loc, valid, x,
                                   zeros(b, cast<VectorType>(x.getType())));
  }
  /// The tile's S^T, softmax update and O^T += V^T P^T; `state` is
  /// (m, l, O^T accumulators...).
  SmallVector<Value> computeTile(OpBuilder &b, Value k0, Value cls,
                                 ValueRange state);
  SmallVector<Value> scores(OpBuilder &b, ArrayRef<Value> s, Value k0,
                            bool withMask);
  /// p as an element of P^T's MFMA operand (f16/bf16), rounded to nearest
  /// even.
  Value probabilityOperand(OpBuilder &b, Value p);
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
  /// gfx90a and gfx942 have no f32 -> bf16 conversion (gfx950 has).
  bool softwareBf16;
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

Value MfmaAttentionBuilder::acrossGroups(OpBuilder &b, Value x,
                                         Combine how) {
  for (int32_t offset : {16, 32}) {
    Value other = gpu::ShuffleOp::create(b, loc, x, offset, kWaveSize,
                                         gpu::ShuffleMode::XOR)
                      .getShuffleResult();
    if (how == Combine::rowMax)
      x = rowMax(b, x, other);
    else if (how == Combine::max)
      x = arith::MaximumFOp::create(b, loc, x, other);
    else
      x = arith::AddFOp::create(b, loc, x, other);
  }
  return x;
}

std::pair<Value, Value> MfmaAttentionBuilder::keyChunkAt(OpBuilder &b,
                                                         Value c) {
  Value perRow = cIdx(b, D / kChunk);
  return {arith::DivUIOp::create(b, loc, c, perRow),
          arith::MulIOp::create(b, loc,
                                arith::RemUIOp::create(b, loc, c, perRow),
                                cIdx(b, kChunk))};
}

std::pair<Value, Value> MfmaAttentionBuilder::valueUnitAt(OpBuilder &b,
                                                          Value u) {
  // 16 consecutive units are 4 column blocks x 4 key groups: V^T rows are
  // BK + 4 elements, 2 BK + 8 bytes, so column block c starts 8 c banks
  // (mod 32) further and key group g 2 g: the 16 lanes' 8-byte writes hit
  // 32 distinct banks. Each global load then reads 32 contiguous bytes of
  // 4 rows per 16 lanes, the next 16 lanes continuing the same rows.
  Value columnLow = arith::RemUIOp::create(b, loc, u, cIdx(b, 4));
  Value keyLow = arith::RemUIOp::create(
      b, loc, arith::DivUIOp::create(b, loc, u, cIdx(b, 4)), cIdx(b, 4));
  Value rest = arith::DivUIOp::create(b, loc, u, cIdx(b, 16));
  Value blocksHigh = cIdx(b, Dv / (4 * kUnitColumns));
  Value columnBlock = arith::AddIOp::create(
      b, loc, columnLow,
      arith::MulIOp::create(
          b, loc, arith::RemUIOp::create(b, loc, rest, blocksHigh),
          cIdx(b, 4)));
  Value keyGroup = arith::AddIOp::create(
      b, loc, keyLow,
      arith::MulIOp::create(
          b, loc, arith::DivUIOp::create(b, loc, rest, blocksHigh),
          cIdx(b, 4)));
  return {arith::MulIOp::create(b, loc, keyGroup, cIdx(b, kUnitKeys)),
          arith::MulIOp::create(b, loc, columnBlock, cIdx(b, kUnitColumns))};
}

SmallVector<Value> MfmaAttentionBuilder::splitOnWholeTile(
    OpBuilder &b, Value k0,
    llvm::function_ref<SmallVector<Value>(OpBuilder &)> emit) {
  if (kvIndex)
    return emit(b);
  // In i32 (key positions are i32 throughout): gfx9 has no scalar 64-bit
  // ordered compare, so an index compare went to VALU through a VGPR pair
  // (and the waitcnt pass made it wait for the loads in flight).
  Value whole = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ule,
                                      toI32(b, add(b, k0, BK)),
                                      toI32(b, keySlots));
  auto ifOp = scf::IfOp::create(
      b, loc, whole,
      [&](OpBuilder &b, Location) {
        wholeTile = true;
        scf::YieldOp::create(b, loc, emit(b));
        wholeTile = false;
      },
      [&](OpBuilder &b, Location) { scf::YieldOp::create(b, loc, emit(b)); });
  return SmallVector<Value>(ifOp.getResults());
}

SmallVector<Value> MfmaAttentionBuilder::loadTile(OpBuilder &b, Value k0) {
  return splitOnWholeTile(b, k0, [&](OpBuilder &b) {
    return loadTileRows(b, k0);
  });
}

SmallVector<Value> MfmaAttentionBuilder::loadTileRows(OpBuilder &b,
                                                      Value k0) {
  // A whole tile's rows are the slots themselves (through the page table
  // when paged).
  auto rowOf = [&](Value slot, Value src) {
    if (wholeTile && !pageTable)
      return KeyRow{bIdx, slot, Value()};
    return kvRows().keyRow(b, slot, src);
  };
  SmallVector<Value> regs, valid;
  auto load = [&](Value src, const KeyRow &r, Value column, VectorType type) {
    regs.push_back(vector::LoadOp::create(
        b, loc, type, src,
        ValueRange{r.outer, hkvIdx, r.row, rowElement(b, column)}));
    valid.push_back(r.valid);
  };
  // The tile's last step may be partial: its spare threads load the last
  // chunk (unit) again, and storeTile skips them.
  // A whole contiguous tile: the hoisted offsets plus k0's rows.
  bool hoisted = wholeTile && tileRowsAtFixedStride();
  for (int64_t s = 0; s < keySteps(); ++s) {
    if (hoisted) {
      Value at = arith::AddIOp::create(
          b, loc, keyOffsets[s],
          arith::MulIOp::create(b, loc, k0, kStrides[2]));
      regs.push_back(
          vector::LoadOp::create(b, loc, loadType(b, true), kFlat, at));
      continue;
    }
    Value c = arith::MinUIOp::create(b, loc, add(b, tid, s * kThreads),
                                     cIdx(b, keyChunks() - 1));
    auto [row, column] = keyChunkAt(b, c);
    load(k, rowOf(arith::AddIOp::create(b, loc, k0, row), k), column,
         loadType(b, true));
  }
  for (int64_t s = 0; s < valueSteps(); ++s) {
    if (hoisted) {
      Value base = arith::AddIOp::create(
          b, loc, valueOffsets[s],
          arith::MulIOp::create(b, loc, k0, vStrides[2]));
      for (int64_t j = 0; j < kUnitKeys; ++j)
        regs.push_back(vector::LoadOp::create(
            b, loc, loadType(b, false), vFlat,
            j ? arith::AddIOp::create(
                    b, loc, base,
                    arith::MulIOp::create(b, loc, vStrides[2], cIdx(b, j)))
                    .getResult()
              : base));
      continue;
    }
    Value u = arith::MinUIOp::create(b, loc, add(b, tid, s * kThreads),
                                     cIdx(b, valueUnits() - 1));
    auto [key, column] = valueUnitAt(b, u);
    Value first = arith::AddIOp::create(b, loc, k0, key);
    if (!unitRowsContiguous()) {
      for (int64_t j = 0; j < kUnitKeys; ++j)
        load(v, kvRows().keyRow(b, add(b, first, j), v), column,
             loadType(b, false));
      continue;
    }
    // Row j is the first row's address plus j rows where it holds a key,
    // else the first row again (a valid address; zeroed when stored): the
    // first (key-aligned) row clamped into the tensor, and a unit never
    // straddles a page.
    KeyRow r = rowOf(first, v);
    Value base = flatIndex(b, {r.outer, hkvIdx, r.row}, vStrides,
                           rowElement(b, column));
    for (int64_t j = 0; j < kUnitKeys; ++j) {
      Value at = base;
      if (j && wholeTile) {
        at = arith::AddIOp::create(
            b, loc, base,
            arith::MulIOp::create(b, loc, vStrides[2], cIdx(b, j)));
      } else if (j) {
        Value holds = arith::CmpIOp::create(
            b, loc, arith::CmpIPredicate::ult, add(b, first, j), keySlots);
        at = arith::AddIOp::create(
            b, loc, base,
            arith::SelectOp::create(
                b, loc, holds,
                arith::MulIOp::create(b, loc, vStrides[2], cIdx(b, j)),
                cIdx(b, 0)));
      }
      regs.push_back(
          vector::LoadOp::create(b, loc, loadType(b, false), vFlat, at));
    }
  }
  if (carriedBits())
    regs.append(valid.begin(), valid.end());
  return regs;
}

SmallVector<Value> MfmaAttentionBuilder::zeroTile(OpBuilder &b) {
  SmallVector<Value> regs(keySteps(), zeros(b, loadType(b, true)));
  regs.append(valueSteps() * kUnitKeys, zeros(b, loadType(b, false)));
  regs.append(carriedBits(), arith::ConstantIntOp::create(b, loc, 0, 1));
  return regs;
}

void MfmaAttentionBuilder::storeKeyChunk(OpBuilder &b, Value k0, Value c,
                                         Value x, Value valid) {
  auto [row, column] = keyChunkAt(b, c);
  x = zeroPastKeys(b, x, arith::AddIOp::create(b, loc, k0, row), valid);
  if (codesQK) {
    if (*quant == KVQuant::int4) // sign-extended nibbles, low first
      x = unpackInt4Codes(b, loc, x);
    if (isFp8(*quant) && fnuz) {
      // OCP bits read as FNUZ are half the value (bias one higher), which
      // the row scale makes up for, except OCP's -0 (0x80): FNUZ's NaN,
      // so it becomes +0.
      VectorType bytes = vec(kChunk, b.getI8Type());
      Value negZero =
          splat(b, bytes, arith::ConstantIntOp::create(b, loc, -128, 8));
      x = arith::SelectOp::create(
          b, loc,
          arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, x, negZero),
          zeros(b, bytes), x);
    }
  } else if (quant) {
    x = dequantizeChunk(
        b, x,
        kvRows().scalePosition(b, arith::AddIOp::create(b, loc, k0, row)),
        column, /*key=*/true);
  }
  vector::StoreOp::create(b, loc, x, kS, ValueRange{row, column});
}

void MfmaAttentionBuilder::storeValueUnit(OpBuilder &b, Value k0, Value u,
                                          ArrayRef<Value> rows,
                                          ArrayRef<Value> valid) {
  auto [key, column] = valueUnitAt(b, u);
  SmallVector<Value> values;
  for (auto [j, row] : llvm::enumerate(rows)) {
    Value x = zeroPastKeys(
        b, row, add(b, arith::AddIOp::create(b, loc, k0, key), int64_t(j)),
        valid.empty() ? Value() : valid[j]);
    if (quant) {
      // The row's codes times its token's scale. (dequantizeChunk's op
      // order would schedule gfx9's code differently.)
      if (*quant == KVQuant::int4)
        x = unpackInt4Codes(b, loc, x);
      Value pos = kvRows().scalePosition(
          b, add(b, arith::AddIOp::create(b, loc, k0, key), int64_t(j)));
      Value scale =
          memref::LoadOp::create(b, loc, vScale, ValueRange{bIdx, hkvIdx, pos});
      SmallVector<Value> decoded;
      for (int64_t e = 0; e < kUnitColumns; ++e)
        decoded.push_back(arith::TruncFOp::create(
            b, loc, elt,
            arith::MulFOp::create(
                b, loc,
                decodeKVCode(b, loc, *quant,
                             vector::ExtractOp::create(b, loc, x, e)),
                scale)));
      x = vector::FromElementsOp::create(b, loc, vec(kUnitColumns, elt),
                                         decoded);
    }
    values.push_back(x);
  }
  // The 4x4 transpose: column e of the unit is element e of every row
  // (16-bit halves picked from two registers at a time: v_perm_b32).
  for (int64_t e = 0; e < kUnitColumns; ++e) {
    Value low = vector::ShuffleOp::create(b, loc, values[0], values[1],
                                          ArrayRef<int64_t>{e, 4 + e});
    Value high = vector::ShuffleOp::create(b, loc, values[2], values[3],
                                           ArrayRef<int64_t>{e, 4 + e});
    Value keys = vector::ShuffleOp::create(b, loc, low, high,
                                           ArrayRef<int64_t>{0, 1, 2, 3});
    // Keys 4 g .. 4 g + 3 of a V^T row: 8-byte aligned (rows are BK + 4
    // elements), one ds_write_b64.
    vector::StoreOp::create(b, loc, keys, vT, ValueRange{add(b, column, e), key},
                            /*nontemporal=*/false, llvm::Align(8));
  }
}

void MfmaAttentionBuilder::storeTile(OpBuilder &b, Value k0,
                                     ValueRange regs) {
  splitOnWholeTile(b, k0, [&](OpBuilder &b) {
    storeTileRows(b, k0, regs);
    return SmallVector<Value>();
  });
}

void MfmaAttentionBuilder::storeTileRows(OpBuilder &b, Value k0,
                                         ValueRange regs) {
  SmallVector<Value> rows(regs.take_front(tileLoads()));
  SmallVector<Value> bits(regs.drop_front(tileLoads()));
  // A partial step's spare threads (index past `count`) store nothing.
  auto guarded = [&](OpBuilder &b, Value index, int64_t s, int64_t count,
                     llvm::function_ref<void(OpBuilder &)> store) {
    if ((s + 1) * kThreads <= count) {
      store(b);
      return;
    }
    Value inRange = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult,
                                          index, cIdx(b, count));
    scf::IfOp::create(b, loc, inRange, [&](OpBuilder &b, Location) {
      store(b);
      scf::YieldOp::create(b, loc);
    });
  };
  for (int64_t s = 0; s < keySteps(); ++s) {
    Value c = add(b, tid, s * kThreads);
    guarded(b, c, s, keyChunks(),
            [&](OpBuilder &b) {
              storeKeyChunk(b, k0, c, rows[s], bits.empty() ? Value() : bits[s]);
            });
  }
  for (int64_t s = 0; s < valueSteps(); ++s) {
    Value u = add(b, tid, s * kThreads);
    int64_t first = keySteps() + s * kUnitKeys;
    guarded(b, u, s, valueUnits(), [&](OpBuilder &b) {
      storeValueUnit(b, k0, u, ArrayRef(rows).slice(first, kUnitKeys),
                     bits.empty() ? ArrayRef<Value>()
                                  : ArrayRef(bits).slice(first, kUnitKeys));
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
      auto [kv32, keep] = kvRows().keyPosition(b, slot);
      out.push_back(scoreEntry(b, vector::ExtractOp::create(b, loc, frag, i),
                               head32, query32, kv32, keep, withMask));
    }
  return out;
}

Value MfmaAttentionBuilder::probabilityOperand(OpBuilder &b, Value p) {
  // LLVM's bf16 rounding keeps NaN apart with a compare and a select (5
  // VALU per element); with a row sum every p also enters l, whose NaN
  // makes the row's output NaN anyway, so the plain integer round to
  // nearest even suffices: bits + 0x7fff + bit 16, the high half (2 VALU;
  // equal to LLVM's for every non-NaN p).
  if (!elt.isBF16() || !softwareBf16 || !hasRowSum(norm))
    return arith::TruncFOp::create(b, loc, elt, p);
  Type i32 = b.getI32Type();
  Value bits = arith::BitcastOp::create(b, loc, i32, p);
  Value lsb = arith::AndIOp::create(
      b, loc, arith::ShRUIOp::create(b, loc, bits, cI32(b, 16)), cI32(b, 1));
  Value rounded = arith::AddIOp::create(
      b, loc, bits, arith::AddIOp::create(b, loc, lsb, cI32(b, 0x7fff)));
  Value high = arith::TruncIOp::create(
      b, loc, b.getI16Type(),
      arith::ShRUIOp::create(b, loc, rounded, cI32(b, 16)));
  return arith::BitcastOp::create(b, loc, elt, high);
}

SmallVector<Value> MfmaAttentionBuilder::quantizedQuery(OpBuilder &b,
                                                        Value k0,
                                                        Value &rowScale) {
  Type f32 = b.getF32Type();
  int64_t width = codeStep / 4;
  VectorType lanes = vec(width, f32);
  KeyRows rows = kvRows();
  Value group = rows.keyScaleGroup(b, rows.scalePosition(b, k0));
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
  amax = acrossGroups(b, amax, Combine::max);
  bool fp8 = isFp8(*quant);
  QueryRowScale rounding =
      queryRowScale(b, loc, amax, queryCodeLimit(*quant, fnuz));
  Value inv = rounding.inverse;
  rowScale = rounding.scale;
  if (fp8 && fnuz) // K's OCP codes read as FNUZ are half their value
    rowScale = arith::MulFOp::create(b, loc, rowScale, cF32(b, 2.0));
  SmallVector<Value> codes;
  if (fp8) {
    // e4m3, four at a time by the hardware's round-to-nearest conversion.
    Type qType = fp8Type(b, KVQuant::fp8e4m3);
    for (Value v : x) {
      Value y = scaleIntoCodeRange(b, loc, v, inv);
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
  for (Value v : x)
    codes.push_back(int8QueryCodes(b, loc, v, inv));
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

  Value m = state[0];
  SmallVector<Value> out(state.begin() + 2, state.end());
  // The row max across the lane groups, for a running max only.
  auto tileMax = [&]() -> Value {
    if (!hasRunningMax(norm))
      return Value();
    // With deferScale, t is the unscaled s: its max times sScale joins the
    // running max (scaled, log2 domain).
    Value mx = deferScale ? cF32(b, -INFINITY) : m;
    for (Value x : t)
      mx = rowMax(b, mx, x);
    mx = acrossGroups(b, mx, Combine::rowMax);
    if (deferScale)
      mx = rowMax(b, m, arith::MulFOp::create(b, loc, mx, sScale));
    return mx;
  };
  RowRescale row = rescaleRow(b, loc, norm, m, tileMax(), state[1],
                              deferScale);
  Value l = row.l;
  SmallVector<Value> p = t;
  for (Value &x : p) {
    // With deferScale, one FMA per entry instead of a multiply and a
    // subtraction.
    x = deferScale ? entryProbabilityScaled(b, loc, norm, x, sScale, row)
                   : entryProbability(b, loc, norm, x, row.mUse);
    l = addToRowSum(b, loc, norm, l, x);
  }
  m = row.m;
  if (row.alpha) {
    Value alphas = splat(b, acc, row.alpha);
    for (Value &o : out)
      o = arith::MulFOp::create(b, loc, o, alphas);
  }

  // O^T += V^T P^T: P^T's B operand for keys 16 kc.. is accumulator kc.
  for (int64_t kc = 0; kc < BK / 16; ++kc) {
    SmallVector<Value> four;
    for (int64_t i = 0; i < 4; ++i)
      four.push_back(probabilityOperand(b, p[kc * 4 + i]));
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
  Value l = acrossGroups(b, state[1], Combine::sum);
  RowNormalization end = normalizeRow(b, loc, norm, l);
  // Null without a row sum, whose split parts simply add up: the merge
  // reads no lse_part then, but 0 is written there as the NVIDIA kernels
  // do (see GpuAttentionBuilder::epilogue).
  Value rowLse = mlir::attn::rowLse(b, loc, norm, state[0], l, end.empty);
  Value partLse = rowLse ? rowLse : cF32(b, 0.0);
  Type outElt = cast<MemRefType>(o.getType()).getElementType();
  Value split = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ugt,
                                      parts, cIdx(b, 1));
  Value firstGroup =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, grp, cIdx(b, 0));
  Value fourGrp = arith::MulIOp::create(b, loc, grp, cIdx(b, 4));
  SmallVector<Value> values(state.drop_front(2));
  if (end.inv) {
    Value invs = splat(b, vec(4, f32), end.inv);
    for (Value &x : values)
      x = arith::MulFOp::create(b, loc, x, invs);
  }
  auto storeRow = [&](OpBuilder &b, Value mem, Value lseMem, Value lseValue,
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
    if (!lseMem || !lseValue)
      return;
    scf::IfOp::create(b, loc, firstGroup, [&](OpBuilder &b, Location) {
      memref::StoreOp::create(b, loc, lseValue, lseMem, at);
      scf::YieldOp::create(b, loc);
    });
  };
  scf::IfOp::create(b, loc, queryValid, [&](OpBuilder &b, Location) {
    scf::IfOp::create(
        b, loc, split,
        [&](OpBuilder &b, Location) {
          // This part's normalized O and log-sum, combined by the merge
          // kernel.
          storeRow(b, oPart, lsePart, partLse, {part, bIdx, head, query},
                   f32);
          scf::YieldOp::create(b, loc);
        },
        [&](OpBuilder &b, Location) {
          storeRow(b, o, lse, rowLse, {bIdx, head, query}, outElt);
          scf::YieldOp::create(b, loc);
        });
    scf::YieldOp::create(b, loc);
  });
}

Value MfmaAttentionBuilder::flatView(OpBuilder &b, Value tensor,
                                     SmallVector<Value> &strides) {
  // All of the tensor's elements: 1 + sum (size - 1) stride (strides are
  // non-negative; the runtime checks).
  auto meta = memref::ExtractStridedMetadataOp::create(b, loc, tensor);
  Value extent = cIdx(b, 1);
  for (auto [size, stride] : llvm::zip(meta.getSizes(), meta.getStrides())) {
    extent = arith::AddIOp::create(
        b, loc, extent,
        arith::MulIOp::create(
            b, loc, arith::SubIOp::create(b, loc, size, cIdx(b, 1)), stride));
    strides.push_back(stride);
  }
  auto type = cast<MemRefType>(tensor.getType());
  auto flatType = MemRefType::get(
      {ShapedType::kDynamic}, type.getElementType(),
      StridedLayoutAttr::get(b.getContext(), ShapedType::kDynamic, {1}),
      type.getMemorySpace());
  return memref::ReinterpretCastOp::create(
      b, loc, flatType, tensor, OpFoldResult(meta.getOffset()),
      ArrayRef<OpFoldResult>{OpFoldResult(extent)},
      ArrayRef<OpFoldResult>{OpFoldResult(b.getIndexAttr(1))});
}

Value MfmaAttentionBuilder::flatIndex(OpBuilder &b, ValueRange indices,
                                      ArrayRef<Value> strides, Value column) {
  Value at = column;
  for (auto [index, stride] : llvm::zip(indices, strides))
    at = arith::AddIOp::create(b, loc, at,
                               arith::MulIOp::create(b, loc, index, stride));
  return at;
}

void MfmaAttentionBuilder::emit(OpBuilder &b, gpu::GPUFuncOp func) {
  kS = func.getWorkgroupAttributions()[0];
  vT = func.getWorkgroupAttributions()[1];
  setUp(b, func, /*extraArgs=*/0);
  deferScale = scaleFoldsIntoExp;
  if (unitRowsContiguous())
    vFlat = flatView(b, v, vStrides);
  if (tileRowsAtFixedStride())
    kFlat = flatView(b, k, kStrides);

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

  if (tileRowsAtFixedStride()) {
    // The tile at key 0's offsets (the last step's spare threads repeat
    // the last chunk / unit, as loadTileRows' clamped path does).
    for (int64_t s = 0; s < keySteps(); ++s) {
      Value c = arith::MinUIOp::create(b, loc, add(b, tid, s * kThreads),
                                       cIdx(b, keyChunks() - 1));
      auto [row, column] = keyChunkAt(b, c);
      keyOffsets.push_back(flatIndex(b, {bIdx, hkvIdx, row}, kStrides,
                                     rowElement(b, column)));
    }
    for (int64_t s = 0; s < valueSteps(); ++s) {
      Value u = arith::MinUIOp::create(b, loc, add(b, tid, s * kThreads),
                                       cIdx(b, valueUnits() - 1));
      auto [key, column] = valueUnitAt(b, u);
      valueOffsets.push_back(flatIndex(b, {bIdx, hkvIdx, key}, vStrides,
                                       rowElement(b, column)));
    }
  }

  // Running max and (per-lane partial) sum; a sink logit is one extra
  // entry with p = exp(sink - m): m = sink, l = 1, counted by lane group 0.
  Value mInit = sinkMax(b, head32);
  Value sinkCounts;
  if (op.hasSink())
    sinkCounts = arith::AndIOp::create(
        b, loc,
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, grp,
                              cIdx(b, 0)),
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, part,
                              cIdx(b, 0)));
  Value lInit = initialRowSum(b, loc, op.hasSink(), sinkCounts);
  SmallVector<Value> state = {mInit, lInit};
  state.append(Dv / 16, zeros(b, vec(4, b.getF32Type())));

  // Key tiles, the next visited one's rows in flight in registers while
  // this one is computed (staged: those registers). The class is the same
  // for the whole workgroup, so every barrier under it is reached by all
  // threads or none.
  auto classify = [&](OpBuilder &b, Value t) {
    return classifyTile(b, arith::MulIOp::create(b, loc, t, cIdx(b, BK)));
  };
  auto stage = [&](OpBuilder &b, Value t, Value cls, ValueRange previous) {
    // Past a tile not loaded the registers stay as they were: the tile's
    // iteration stores nothing.
    SmallVector<Value> otherwise =
        previous.empty() ? zeroTile(b) : SmallVector<Value>(previous);
    auto ifOp = scf::IfOp::create(
        b, loc, isVisited(b, cls),
        [&](OpBuilder &b, Location) {
          scf::YieldOp::create(
              b, loc,
              loadTile(b, arith::MulIOp::create(b, loc, t, cIdx(b, BK))));
        },
        [&](OpBuilder &b, Location) {
          scf::YieldOp::create(b, loc, otherwise);
        });
    return SmallVector<Value>(ifOp.getResults());
  };
  auto arrive = [&](OpBuilder &b, Value t, Value cls, ValueRange regs) {
    scf::IfOp::create(b, loc, isVisited(b, cls), [&](OpBuilder &b, Location) {
      // Everyone is done reading the previous tile.
      gpu::BarrierOp::create(b, loc);
      storeTile(b, arith::MulIOp::create(b, loc, t, cIdx(b, BK)), regs);
      gpu::BarrierOp::create(b, loc);
      scf::YieldOp::create(b, loc);
    });
  };
  auto body = [&](OpBuilder &b, Value k0, Value cls, ValueRange,
                  ValueRange carried) {
    return computeTile(b, k0, cls, carried);
  };
  epilogue(b, walkKeyTilesLookingAhead(b, loc, tileBegin, numTiles, BK, state,
                                       classify, {stage, arrive, body}));
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
