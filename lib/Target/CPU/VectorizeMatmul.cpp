//===- VectorizeMatmul.cpp - tile matmuls as register-blocked vector code -===//
//
//   for i0 in rows step R:                      (R rows of C in registers)
//     acc[r] = C[i0 + r, n0 : n0 + NC]
//     for k in 0..K:
//       bk = B[k, n0 : n0 + NC]                  (one load, reused R times)
//       acc[r] = fma(broadcast(A[i0 + r, k]), bk, acc[r])
//     C[i0 + r, n0 : n0 + NC] = acc[r]
//
// With B given transposed (C[m, n] += A[m, k] * B[n, k]: few columns, as in
// decode's Q.K^T against a handful of query rows), vectors run along k
// instead and each C element ends in one horizontal sum:
//
//   for i0 in rows step R:
//     acc[r][n] = 0
//     for k0 in 0..K step lanes:
//       acc[r][n] = fma(A[i0 + r, k0 : k0 + lanes], B[n, k0 : k0 + lanes], ..)
//     C[i0 + r, n] += reduce_add(acc[r][n])
//
//===----------------------------------------------------------------------===//
#include "lib/Target/CPU/Passes.h"
#include "lib/Target/CPU/Transforms.h"
#include "lib/Transforms/Transforms.h"

#include "mlir/Analysis/SliceAnalysis.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/PatternMatch.h"
#include "llvm/ADT/StringSwitch.h"

#include <cmath>
#include <functional>

namespace mlir::attn::cpu {
#define GEN_PASS_DEF_ATTNCPUVECTORIZEMATMULPASS
#include "lib/Target/CPU/Passes.h.inc"
} // namespace mlir::attn::cpu

using namespace mlir;

namespace {

/// How i8 operands decode: plain integers, or the fp8 format a matmul
/// reading codes in place names (kKVCodesAttr).
mlir::attn::KVQuant codesOf(Operation *op) {
  if (auto name = op->getAttrOfType<StringAttr>(mlir::attn::kKVCodesAttr))
    if (auto kind = mlir::attn::symbolizeKVQuant(name.getValue()))
      return *kind;
  return mlir::attn::KVQuant::int8;
}

/// fp8 codes' sign and 7 magnitude bits moved into a 16-bit float's
/// (magnitude << shift, sign to bit 15), from the codes sign-extended to 16
/// bits (`words`): the shift carries the sign into bits 8 + shift .. 15,
/// so one mask keeps it at bit 15 with the magnitude. A shift and an and
/// per vector, where masking the magnitude and the sign of zero-extended
/// codes apart took a second extension and a combine (on x86, 3 vector
/// instructions instead of 5).
Value signMagnitudeBits(OpBuilder &b, Location loc, Value words,
                        int64_t shift) {
  auto type = cast<VectorType>(words.getType());
  auto splat = [&](int64_t v) -> Value {
    return arith::ConstantOp::create(
        b, loc, type,
        DenseElementsAttr::get(type, b.getIntegerAttr(b.getI16Type(), v)));
  };
  return arith::AndIOp::create(
      b, loc, arith::ShLIOp::create(b, loc, words, splat(shift)),
      splat(int16_t(0x8000 | (0x7F << shift))));
}

/// Vectors of fp8 codes as f32 through f16 (vcvtph2ps, F16C: every CPU
/// with AVX2 or AVX-512 has it), the cheapest exact conversion x86 has:
/// e5m2 codes are the top byte of the f16 of the same value; e4m3's sign
/// and magnitude bits move into an f16 that reads as the value times 2^-8
/// (subnormals included). Half the bit operations of building f32s, 16
/// codes per 256-bit register. e5m2's inf/NaN codes decode to inf/NaN
/// (quantized caches hold none).
Value fp8ViaHalf(OpBuilder &b, Location loc, VectorType f32Type, Value codes,
                 mlir::attn::KVQuant kind) {
  auto words = f32Type.clone(b.getI16Type());
  auto splat = [&](int64_t v) -> Value {
    return arith::ConstantOp::create(
        b, loc, words, DenseElementsAttr::get(words, b.getI16IntegerAttr(v)));
  };
  Value bits;
  if (kind == mlir::attn::KVQuant::fp8e5m2)
    bits = arith::ShLIOp::create(
        b, loc, arith::ExtUIOp::create(b, loc, words, codes), splat(8));
  else
    bits = signMagnitudeBits(b, loc,
                             arith::ExtSIOp::create(b, loc, words, codes), 7);
  Value half = arith::BitcastOp::create(
      b, loc, VectorType(f32Type.clone(b.getF16Type())), bits);
  Value x = arith::ExtFOp::create(b, loc, Type(f32Type), half);
  if (kind == mlir::attn::KVQuant::fp8e5m2)
    return x;
  return arith::MulFOp::create(
      b, loc, x,
      arith::ConstantOp::create(
          b, loc, f32Type,
          DenseElementsAttr::get(f32Type, b.getF32FloatAttr(256.0f))));
}

/// x (f16/bf16, or codes) as f32.
Value toF32(OpBuilder &b, Location loc, Type f32Type, Value x,
            mlir::attn::KVQuant codes) {
  Type elt = getElementTypeOrSelf(x.getType());
  if (elt.isF32())
    return x;
  if (isa<FloatType>(elt))
    return arith::ExtFOp::create(b, loc, f32Type, x);
  auto vectorType = dyn_cast<VectorType>(f32Type);
  if (vectorType && vectorType.getNumElements() >= 8 &&
      mlir::attn::isFp8(codes))
    return fp8ViaHalf(b, loc, vectorType, x, codes);
  return mlir::attn::decodeKVCode(b, loc, codes, x);
}

/// `type` (f32 lanes) of mem[idx...]: f32 loaded as is; f16/bf16 or codes
/// (decode reading a cache in place) loaded and converted.
Value loadLanes(OpBuilder &b, Location loc, VectorType type, Value mem,
                ValueRange idx,
                mlir::attn::KVQuant codes = mlir::attn::KVQuant::int8) {
  Type elt = cast<MemRefType>(mem.getType()).getElementType();
  Value x = vector::LoadOp::create(
      b, loc, VectorType::get(type.getShape(), elt), mem, idx);
  return toF32(b, loc, type, x, codes);
}

/// One element of mem as f32 (unsigned: 8-bit codes read as 0..255).
Value loadScalar(OpBuilder &b, Location loc, Value mem, ValueRange idx,
                 mlir::attn::KVQuant codes = mlir::attn::KVQuant::int8,
                 bool isUnsigned = false) {
  Value x = memref::LoadOp::create(b, loc, mem, idx);
  if (isUnsigned && x.getType().isInteger(8))
    return arith::UIToFPOp::create(b, loc, b.getF32Type(), x);
  return toF32(b, loc, b.getF32Type(), x, codes);
}

int64_t powerOfTwoFloor(int64_t x) {
  int64_t p = 1;
  while (p * 2 <= x)
    p *= 2;
  return p;
}

/// The outer-product kernel's block for C [M, N]: `v` vectors of C's row
/// per column chunk, `rows` rows of them in registers, plus v registers for
/// B's row and one for the broadcast. The most accumulators win (FMAs per
/// load), then the wider chunk (fewer broadcasts): 16 registers (AVX2) take
/// 6 rows x 2 vectors (12 accumulators, 8 loads per 12 FMAs) over 2 rows x
/// 4 (8 accumulators: just the FMA latency times two ports, 6 loads per 8).
/// Chunks stay powers of two vectors: a 3-vector chunk is one 24-lane
/// vector, which LLVM legalizes badly on AVX2.
std::pair<int64_t, int64_t> rowBlockShape(int64_t M, int64_t N, int64_t lanes,
                                          int64_t registers) {
  int64_t vecsNeeded = (N + lanes - 1) / lanes;
  int64_t maxVecs = std::max<int64_t>(1, registers / 4);
  // (N not a power-of-two number of vectors keeps its one chunk, as it
  // always has: e.g. N = 48 on AVX-512.)
  if (vecsNeeded <= maxVecs && powerOfTwoFloor(vecsNeeded) != vecsNeeded) {
    int64_t rows = std::clamp<int64_t>(
        powerOfTwoFloor(std::max<int64_t>(1, (registers - vecsNeeded - 1) /
                                                 vecsNeeded)),
        1, 8);
    return {vecsNeeded, std::min(rows, M)};
  }
  int64_t bestV = 1, bestRows = 1;
  for (int64_t v = 1; v <= std::min(vecsNeeded, maxVecs); v *= 2) {
    int64_t rows = std::clamp<int64_t>((registers - v - 1) / v, 1, 8);
    rows = std::min(rows, M);
    if (v * rows >= bestV * bestRows) {
      bestV = v;
      bestRows = rows;
    }
  }
  return {bestV, bestRows};
}

/// Emits rows [rowBegin, rowEnd) of C's columns [n0, n0 + nc) in blocks of
/// `rows` rows; with `zeroC` (C was zero-filled) the sums start from zero
/// instead of C's values.
void emitRowBlocks(OpBuilder &b, Location loc, Value A, bool transposedA,
                   Value B, Value C, int64_t K, int64_t n0, int64_t nc,
                   int64_t rowBegin, int64_t rowEnd, int64_t rows,
                   mlir::attn::KVQuant codes, bool unsignedA, bool zeroC) {
  if (rowEnd <= rowBegin)
    return;
  auto vt = VectorType::get({nc}, b.getF32Type());
  auto cIdx = [&](int64_t v) {
    return arith::ConstantIndexOp::create(b, loc, v).getResult();
  };
  Value col = cIdx(n0);
  scf::ForOp::create(
      b, loc, cIdx(rowBegin), cIdx(rowEnd), cIdx(rows), ValueRange{},
      [&](OpBuilder &b, Location, Value i0, ValueRange) {
        SmallVector<Value> rowIdx, init;
        for (int64_t r = 0; r < rows; ++r) {
          Value i = r == 0 ? i0
                           : arith::AddIOp::create(b, loc, i0, cIdx(r))
                                 .getResult();
          rowIdx.push_back(i);
          init.push_back(
              zeroC ? arith::ConstantOp::create(
                          b, loc, vt,
                          DenseElementsAttr::get(vt, b.getF32FloatAttr(0.0)))
                          .getResult()
                    : vector::LoadOp::create(b, loc, vt, C, ValueRange{i, col})
                          .getResult());
        }
        auto kLoop = scf::ForOp::create(
            b, loc, cIdx(0), cIdx(K), cIdx(1), init,
            [&](OpBuilder &b, Location, Value k, ValueRange acc) {
              Value bk = loadLanes(b, loc, vt, B, ValueRange{k, col}, codes);
              SmallVector<Value> next;
              for (int64_t r = 0; r < rows; ++r) {
                Value a = loadScalar(b, loc, A,
                                     transposedA ? ValueRange{k, rowIdx[r]}
                                                 : ValueRange{rowIdx[r], k},
                                     codes, unsignedA);
                Value ab = vector::BroadcastOp::create(b, loc, vt, a);
                next.push_back(vector::FMAOp::create(b, loc, ab, bk, acc[r]));
              }
              scf::YieldOp::create(b, loc, next);
            });
        for (int64_t r = 0; r < rows; ++r)
          vector::StoreOp::create(b, loc, kLoop.getResult(r), C,
                                  ValueRange{rowIdx[r], col});
        scf::YieldOp::create(b, loc);
      });
}

/// Sums each of R x N accumulators (order r * N + n) across its lanes and
/// returns, per row r, the vector of its N sums. With exactly `lanes`
/// accumulators they halve pairwise, each level adding the two halves of
/// every lane group, until one vector holds all the sums in accumulator
/// order: log2(lanes) levels of two shuffles and an add instead of a
/// horizontal sum each.
SmallVector<Value> rowSums(OpBuilder &b, Location loc, SmallVector<Value> accs,
                           int64_t R, int64_t N, int64_t lanes,
                           function_ref<Value(OpBuilder &, Value, Value)> add) {
  auto elt = cast<VectorType>(accs[0].getType()).getElementType();
  auto nt = VectorType::get({N}, elt);
  SmallVector<Value> out;
  if (int64_t(accs.size()) == lanes) {
    for (int64_t group = lanes / 2; group >= 1; group /= 2) {
      SmallVector<Value> next;
      for (size_t p = 0; p < accs.size(); p += 2) {
        SmallVector<int64_t> lo, hi;
        for (int64_t base = 0; base < 2 * lanes; base += 2 * group)
          for (int64_t l = 0; l < group; ++l) {
            lo.push_back(base + l);
            hi.push_back(base + group + l);
          }
        Value x = vector::ShuffleOp::create(b, loc, accs[p], accs[p + 1], lo);
        Value y = vector::ShuffleOp::create(b, loc, accs[p], accs[p + 1], hi);
        next.push_back(add(b, x, y));
      }
      accs = std::move(next);
    }
    for (int64_t r = 0; r < R; ++r)
      out.push_back(vector::ExtractStridedSliceOp::create(
          b, loc, accs[0], ArrayRef<int64_t>{r * N}, ArrayRef<int64_t>{N},
          ArrayRef<int64_t>{1}));
    return out;
  }
  auto fm = arith::FastMathFlagsAttr::get(
      b.getContext(),
      arith::FastMathFlags::reassoc | arith::FastMathFlags::contract);
  for (int64_t r = 0; r < R; ++r) {
    SmallVector<Value> sums;
    for (int64_t n = 0; n < N; ++n)
      sums.push_back(vector::ReductionOp::create(
          b, loc, vector::CombiningKind::ADD, accs[r * N + n], Value(),
          isa<FloatType>(elt) ? fm.getValue() : arith::FastMathFlags::none));
    out.push_back(vector::FromElementsOp::create(b, loc, nt, sums));
  }
  return out;
}

/// acc += the dot products `intrinsic` takes of x and y per lane of acc.
Value laneDots(OpBuilder &b, Location loc, StringRef intrinsic, Value acc,
               Value x, Value y) {
  return LLVM::CallIntrinsicOp::create(b, loc, acc.getType(),
                                       b.getStringAttr(intrinsic),
                                       ValueRange{acc, x, y})
      .getResult(0);
}

using mlir::attn::cpu::ByteDots;

/// vpmaddubsw: the 16-bit sums of adjacent products u8(a) * s8(bytes),
/// saturating.
Value bytePairSums(OpBuilder &b, Location loc, Value a, Value bytes) {
  auto type = cast<VectorType>(a.getType());
  bool zmm = type.getNumElements() == 64;
  auto words = VectorType::get({type.getNumElements() / 2}, b.getI16Type());
  return LLVM::CallIntrinsicOp::create(
             b, loc, words,
             b.getStringAttr(zmm ? "llvm.x86.avx512.pmaddubs.w.512"
                                 : "llvm.x86.avx2.pmadd.ub.sw"),
             ValueRange{a, bytes})
      .getResult(0);
}

/// vpmaddwd by a splat `factor`: i32 lanes of factor * (the sum of their
/// two 16-bit words).
Value wordPairSums(OpBuilder &b, Location loc, Value words, int64_t factor) {
  auto type = cast<VectorType>(words.getType());
  auto lanes = VectorType::get({type.getNumElements() / 2}, b.getI32Type());
  Value splat = arith::ConstantOp::create(
      b, loc, type,
      DenseElementsAttr::get(type, b.getI16IntegerAttr(int16_t(factor))));
  return LLVM::CallIntrinsicOp::create(
             b, loc, lanes,
             b.getStringAttr(lanes.getNumElements() == 16
                                 ? "llvm.x86.avx512.pmaddw.d.512"
                                 : "llvm.x86.avx2.pmadd.wd"),
             ValueRange{words, splat})
      .getResult(0);
}

/// acc (i32 lanes) += the 4 products u8(a) * s8(bytes) under each lane:
/// vpdpbusd with VNNI (zmm, or ymm: AVX-VNNI / AVX-512 VL), else
/// vpmaddubsw + vpmaddwd, whose 16-bit pair sums saturate: callers keep
/// |a0 * b0 + a1 * b1| <= 32767 for every byte pair (see signedDot and
/// wideUnsignedDot).
Value int8Dot(OpBuilder &b, Location loc, ByteDots dots, Value acc, Value a,
              Value bytes) {
  if (dots == ByteDots::vnni)
    return laneDots(b, loc,
                    cast<VectorType>(acc.getType()).getNumElements() == 16
                        ? "llvm.x86.avx512.vpdpbusd.512"
                        : "llvm.x86.avx512.vpdpbusd.256",
                    acc, a, bytes);
  return arith::AddIOp::create(
      b, loc, acc, wordPairSums(b, loc, bytePairSums(b, loc, a, bytes), 1));
}

/// |x| of signed bytes (-128 stays 0x80, which reads as 128 unsigned).
Value absBytes(OpBuilder &b, Location loc, Value x) {
  auto type = cast<VectorType>(x.getType());
  Value zero = arith::ConstantOp::create(
      b, loc, type, DenseElementsAttr::get(type, b.getI8IntegerAttr(0)));
  return arith::SelectOp::create(
      b, loc, arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, x, zero),
      arith::SubIOp::create(b, loc, zero, x), x);
}

/// acc += the 4 products of signed bytes x and y under each lane, without
/// VNNI: |x| (unsigned, at most 128) times y with x's sign, exact for y in
/// [-127, 127] (pairs of at most 2 * 128 * 127).
Value signedDot(OpBuilder &b, Location loc, ByteDots dots, Value acc, Value x,
                Value absX, Value y) {
  auto type = cast<VectorType>(y.getType());
  Value signedY;
  if (type.getNumElements() == 32) {
    // vpsignb: y negated where x < 0 (zeroed where x == 0, where |x| is 0
    // anyway).
    signedY = LLVM::CallIntrinsicOp::create(
                  b, loc, type, b.getStringAttr("llvm.x86.avx2.psign.b"),
                  ValueRange{y, x})
                  .getResult(0);
  } else {
    Value zero = arith::ConstantOp::create(
        b, loc, type, DenseElementsAttr::get(type, b.getI8IntegerAttr(0)));
    Value negative =
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, x, zero);
    signedY = arith::SelectOp::create(
        b, loc, negative, arith::SubIOp::create(b, loc, zero, y), y);
  }
  return int8Dot(b, loc, dots, acc, absX, signedY);
}

/// acc += the 4 products u8(a) * s8(bytes) under each lane for any bytes:
/// with VNNI one vpdpbusd; without, a's low 7 bits and its top bit
/// (times 128) take one vpmaddubsw each (pairs of at most 2 * 127 * 128).
Value wideUnsignedDot(OpBuilder &b, Location loc, ByteDots dots, Value acc,
                      Value a, Value bytes) {
  if (dots == ByteDots::vnni)
    return int8Dot(b, loc, dots, acc, a, bytes);
  auto type = cast<VectorType>(a.getType());
  auto splat = [&](int64_t v) -> Value {
    return arith::ConstantOp::create(
        b, loc, type, DenseElementsAttr::get(type, b.getI8IntegerAttr(v)));
  };
  Value low = arith::AndIOp::create(b, loc, a, splat(0x7F));
  Value top = arith::ShRUIOp::create(b, loc, a, splat(7));
  Value sum = arith::AddIOp::create(
      b, loc, acc, wordPairSums(b, loc, bytePairSums(b, loc, top, bytes), 128));
  return arith::AddIOp::create(
      b, loc, sum, wordPairSums(b, loc, bytePairSums(b, loc, low, bytes), 1));
}

/// vdpbf16ps: acc (f32 lanes) += the 2 products of bf16 pairs per lane.
Value bf16Dot(OpBuilder &b, Location loc, Value acc, Value x, Value y) {
  return laneDots(b, loc, "llvm.x86.avx512bf16.dpbf16ps.512", acc, x, y);
}

/// How an fp8 format's codes become bf16 bits by moving bits only: the
/// magnitude bits shifted up to bf16's mantissa/exponent boundary and the
/// sign to bit 15, which reads as the value times 2^-bias (bias: 120 for
/// e4m3, 112 for e5m2; fp8 subnormals become bf16 subnormals, which
/// vdpbf16ps reads as zero: values below 2^-6 (e4m3) or 2^-14 (e5m2) of a
/// scale, under a thousandth of the largest code).
struct Fp8AsBf16 {
  int64_t shift, bias;
};
Fp8AsBf16 fp8AsBf16(mlir::attn::KVQuant codes) {
  return codes == mlir::attn::KVQuant::fp8e4m3 ? Fp8AsBf16{4, 120}
                                                : Fp8AsBf16{5, 112};
}

/// A splat vector of `type` (i8, i16 or i32 elements).
Value splatInt(OpBuilder &b, Location loc, VectorType type, int64_t v) {
  return arith::ConstantOp::create(
      b, loc, type,
      DenseElementsAttr::get(
          type, b.getIntegerAttr(type.getElementType(), v)));
}

/// Packed int4 bytes (a vector) as their low and high nibbles, each a byte
/// vector of 0..15 holding code + 8 (the codes' sign bits flipped).
std::pair<Value, Value> offsetNibbles(OpBuilder &b, Location loc,
                                      Value bytes) {
  auto type = cast<VectorType>(bytes.getType());
  auto words = VectorType::get({type.getNumElements() / 2}, b.getI16Type());
  Value flipped =
      arith::XOrIOp::create(b, loc, bytes, splatInt(b, loc, type, 0x88));
  Value low4 = splatInt(b, loc, type, 0x0F);
  Value shifted = vector::BitCastOp::create(
      b, loc, type,
      arith::ShRUIOp::create(
          b, loc, vector::BitCastOp::create(b, loc, words, flipped),
          splatInt(b, loc, words, 4)));
  return {arith::AndIOp::create(b, loc, flipped, low4),
          arith::AndIOp::create(b, loc, shifted, low4)};
}

/// Shuffle mask concatenating two vectors of n lanes.
SmallVector<int64_t> concatMask(int64_t n) {
  SmallVector<int64_t> mask;
  for (int64_t l = 0; l < 2 * n; ++l)
    mask.push_back(l);
  return mask;
}

/// C[m, n] += sum_k A[m, k] * B[n, k] for all rows and columns: dot
/// products along k (K a multiple of `lanes`; with byte dots, of 4 * lanes
/// bytes, A and B int8 and 4 products per i32 lane (without VNNI, B's
/// bytes in [-127, 127], as the tiler's query codes are); with fp8Dots, of
/// 2 * lanes, A fp8 codes and B f32, 2 bf16 products per f32 lane; with
/// int4A and int8Dots, A's int4 codes packed two per byte ([M, K / 2]):
/// each step's packed bytes split into their low and high nibbles, which
/// meet B's even and odd columns of the step, de-interleaved once per
/// matmul).
void emitDotProducts(OpBuilder &b, Location loc, Value A, Value B, Value C,
                     int64_t M, int64_t N, int64_t K, int64_t lanes,
                     int64_t rows, mlir::attn::KVQuant codes, ByteDots byteDots,
                     bool fp8Dots = false, bool int4A = false) {
  bool int8Dots = byteDots != ByteDots::none;
  // Without VNNI, int8 codes meet B as |a| times b with a's sign (exact,
  // no offsets); int4's offset nibbles (0..15) go in unsigned as with VNNI.
  bool signTrick = int8Dots && byteDots != ByteDots::vnni && !int4A;
  auto vt = VectorType::get({lanes}, int8Dots ? Type(b.getI32Type())
                                              : Type(b.getF32Type()));
  auto bytesType = VectorType::get({4 * lanes}, b.getI8Type());
  auto cIdx = [&](int64_t v) {
    return arith::ConstantIndexOp::create(b, loc, v).getResult();
  };
  auto fm = arith::FastMathFlagsAttr::get(
      b.getContext(),
      arith::FastMathFlags::reassoc | arith::FastMathFlags::contract);
  int64_t step = int8Dots ? 4 * lanes : fp8Dots ? 2 * lanes : lanes;
  // int4: a step of 8 * lanes codes (its low nibbles and its high ones
  // fill one vector each), or of 4 * lanes (both fill one together).
  bool wideInt4 = int4A && K % (8 * lanes) == 0;
  if (wideInt4)
    step = 8 * lanes;
  auto pairType = VectorType::get({2 * lanes}, b.getBF16Type());
  // fp8 dots: B's rows as bf16 once per matmul, times 2^(bias / 2) so the
  // products of A's codes read as value * 2^-bias stay normal f32; the
  // other 2^(bias / 2) goes onto the sums.
  Value bBf16;
  Fp8AsBf16 format = fp8AsBf16(codes);
  if (fp8Dots) {
    bBf16 = memref::AllocaOp::create(
        b, loc, MemRefType::get({N, K}, b.getBF16Type()),
        b.getI64IntegerAttr(64));
    auto f32Pair = VectorType::get({2 * lanes}, b.getF32Type());
    Value up = arith::ConstantOp::create(
        b, loc, f32Pair,
        DenseElementsAttr::get(
            f32Pair, b.getF32FloatAttr(std::ldexp(1.0f, int(format.bias / 2)))));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k0 = 0; k0 < K; k0 += 2 * lanes) {
        Value x = vector::LoadOp::create(b, loc, f32Pair, B,
                                         ValueRange{cIdx(n), cIdx(k0)});
        vector::StoreOp::create(
            b, loc,
            arith::TruncFOp::create(b, loc, pairType,
                                    arith::MulFOp::create(b, loc, x, up)),
            bBf16, ValueRange{cIdx(n), cIdx(k0)});
      }
  }
  // A's codes as bf16 bits: magnitude << shift, sign at bit 15.
  auto codesAsBf16 = [&](OpBuilder &b, Value bytes) -> Value {
    auto halfType = VectorType::get({2 * lanes}, b.getI16Type());
    return arith::BitcastOp::create(
        b, loc, pairType,
        signMagnitudeBits(b, loc,
                          arith::ExtSIOp::create(b, loc, halfType, bytes),
                          format.shift));
  };
  Value zero = arith::ConstantOp::create(
      b, loc, vt,
      int8Dots ? DenseElementsAttr::get(vt, b.getI32IntegerAttr(0))
               : DenseElementsAttr::get(vt, b.getF32FloatAttr(0.0f)));
  // vpdpbusd multiplies unsigned bytes by signed ones: A's codes go in as
  // a + 128 (sign bit flipped; int4: a + 8), so every sum carries
  // 128 * sum_k B[n, k] (8 * ...), computed once per column here.
  Value signBits, offsets;
  if (int8Dots && !signTrick) {
    signBits = splatInt(b, loc, bytesType, -128);
    Value offsetBytes = int4A ? splatInt(b, loc, bytesType, 8) : signBits;
    SmallVector<Value> perColumn;
    for (int64_t n = 0; n < N; ++n) {
      auto loop = scf::ForOp::create(
          b, loc, cIdx(0), cIdx(K), cIdx(4 * lanes), ValueRange{zero},
          [&](OpBuilder &b, Location, Value k, ValueRange acc) {
            Value bn = vector::LoadOp::create(b, loc, bytesType, B,
                                              ValueRange{cIdx(n), k});
            scf::YieldOp::create(
                b, loc, int8Dot(b, loc, byteDots, acc[0], offsetBytes, bn));
          });
      perColumn.push_back(vector::ReductionOp::create(
          b, loc, vector::CombiningKind::ADD, loop.getResult(0)));
    }
    offsets = vector::FromElementsOp::create(
        b, loc, VectorType::get({N}, b.getI32Type()), perColumn);
  }
  // int4: B's rows with each step's even columns first, then its odd ones
  // (the order of the nibbles below).
  Value bRows = B;
  if (int4A) {
    bRows = memref::AllocaOp::create(
        b, loc, MemRefType::get({N, K}, b.getI8Type()),
        b.getI64IntegerAttr(64));
    auto stepType = VectorType::get({step}, b.getI8Type());
    SmallVector<int64_t> evensThenOdds;
    for (int64_t j = 0; j < step; ++j)
      evensThenOdds.push_back(j < step / 2 ? 2 * j : 2 * (j - step / 2) + 1);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k0 = 0; k0 < K; k0 += step) {
        SmallVector<Value, 2> at = {cIdx(n), cIdx(k0)};
        Value x = vector::LoadOp::create(b, loc, stepType, B, at);
        vector::StoreOp::create(
            b, loc, vector::ShuffleOp::create(b, loc, x, x, evensThenOdds),
            bRows, at);
      }
  }
  auto block = [&](OpBuilder &b, Value i0, int64_t R) {
    SmallVector<Value> rowIdx;
    for (int64_t r = 0; r < R; ++r)
      rowIdx.push_back(r == 0 ? i0
                              : arith::AddIOp::create(b, loc, i0, cIdx(r))
                                    .getResult());
    SmallVector<Value> init(R * N, zero);
    auto kLoop = scf::ForOp::create(
        b, loc, cIdx(0), cIdx(K), cIdx(step), init,
        [&](OpBuilder &b, Location, Value k, ValueRange acc) {
          SmallVector<Value> a, absA, bv, next;
          auto pairBytes = VectorType::get({2 * lanes}, b.getI8Type());
          if (int4A) {
            // Per row: the step's packed bytes as nibbles; per column: B's
            // matching evens and odds. Each accumulator takes the pieces'
            // dot products in turn.
            Value packedCol = arith::DivUIOp::create(b, loc, k, cIdx(2));
            auto packedType = VectorType::get({step / 2}, b.getI8Type());
            int64_t pieces = wideInt4 ? 2 : 1;
            for (int64_t r = 0; r < R; ++r) {
              auto [lo, hi] = offsetNibbles(
                  b, loc,
                  vector::LoadOp::create(b, loc, packedType, A,
                                         ValueRange{rowIdx[r], packedCol}));
              if (wideInt4) {
                a.push_back(lo);
                a.push_back(hi);
              } else {
                a.push_back(vector::ShuffleOp::create(b, loc, lo, hi,
                                                      concatMask(2 * lanes)));
              }
            }
            for (int64_t n = 0; n < N; ++n)
              for (int64_t piece = 0; piece < pieces; ++piece)
                bv.push_back(vector::LoadOp::create(
                    b, loc, bytesType, bRows,
                    ValueRange{cIdx(n),
                               arith::AddIOp::create(
                                   b, loc, k, cIdx(piece * 4 * lanes))}));
            for (int64_t r = 0; r < R; ++r)
              for (int64_t n = 0; n < N; ++n) {
                Value c = acc[r * N + n];
                for (int64_t piece = 0; piece < pieces; ++piece)
                  c = int8Dot(b, loc, byteDots, c, a[r * pieces + piece],
                              bv[n * pieces + piece]);
                next.push_back(c);
              }
            scf::YieldOp::create(b, loc, next);
            return;
          }
          for (int64_t r = 0; r < R; ++r) {
            SmallVector<Value, 2> at = {rowIdx[r], k};
            if (signTrick) {
              a.push_back(vector::LoadOp::create(b, loc, bytesType, A, at));
              absA.push_back(absBytes(b, loc, a.back()));
            } else if (int8Dots)
              a.push_back(arith::XOrIOp::create(
                  b, loc, vector::LoadOp::create(b, loc, bytesType, A, at),
                  signBits));
            else if (fp8Dots)
              a.push_back(codesAsBf16(
                  b, vector::LoadOp::create(b, loc, pairBytes, A, at)));
            else
              a.push_back(loadLanes(b, loc, vt, A, at, codes));
          }
          for (int64_t n = 0; n < N; ++n) {
            SmallVector<Value, 2> at = {cIdx(n), k};
            if (int8Dots)
              bv.push_back(vector::LoadOp::create(b, loc, bytesType, B, at));
            else if (fp8Dots)
              bv.push_back(vector::LoadOp::create(b, loc, pairType, bBf16, at));
            else
              bv.push_back(loadLanes(b, loc, vt, B, at, codes));
          }
          for (int64_t r = 0; r < R; ++r)
            for (int64_t n = 0; n < N; ++n) {
              Value c = acc[r * N + n];
              next.push_back(
                  signTrick
                      ? signedDot(b, loc, byteDots, c, a[r], absA[r], bv[n])
                  : int8Dots ? int8Dot(b, loc, byteDots, c, a[r], bv[n])
                  : fp8Dots  ? bf16Dot(b, loc, c, a[r], bv[n])
                             : vector::FMAOp::create(b, loc, a[r], bv[n], c)
                                  .getResult());
            }
          scf::YieldOp::create(b, loc, next);
        });
    SmallVector<Value> sums = rowSums(
        b, loc, SmallVector<Value>(kLoop.getResults()), R, N, lanes,
        [&](OpBuilder &b, Value x, Value y) -> Value {
          if (int8Dots)
            return arith::AddIOp::create(b, loc, x, y);
          return arith::AddFOp::create(b, loc, x, y, fm);
        });
    auto nt = VectorType::get({N}, b.getF32Type());
    for (int64_t r = 0; r < R; ++r) {
      Value sum = sums[r];
      if (offsets) // exact: the offsets come off in i32
        sum = arith::SubIOp::create(b, loc, sum, offsets);
      if (int8Dots)
        sum = arith::SIToFPOp::create(b, loc, nt, sum);
      if (fp8Dots)
        sum = arith::MulFOp::create(
            b, loc, sum,
            arith::ConstantOp::create(
                b, loc, nt,
                DenseElementsAttr::get(
                    nt, b.getF32FloatAttr(std::ldexp(
                            1.0f, int(format.bias - format.bias / 2))))));
      Value old =
          vector::LoadOp::create(b, loc, nt, C, ValueRange{rowIdx[r], cIdx(0)});
      vector::StoreOp::create(b, loc, arith::AddFOp::create(b, loc, old, sum),
                              C, ValueRange{rowIdx[r], cIdx(0)});
    }
  };
  int64_t main = M - M % rows;
  if (main > 0)
    scf::ForOp::create(b, loc, cIdx(0), cIdx(main), cIdx(rows), ValueRange{},
                       [&](OpBuilder &b, Location, Value i0, ValueRange) {
                         block(b, i0, rows);
                         scf::YieldOp::create(b, loc);
                       });
  for (int64_t i = main; i < M; ++i)
    block(b, cIdx(i), 1);
}

/// A static 2-D buffer whose rows follow each other without gaps.
bool isStaticContiguous(Value v) {
  auto t = cast<MemRefType>(v.getType());
  SmallVector<int64_t> strides;
  int64_t offset;
  return t.hasStaticShape() &&
         succeeded(t.getStridesAndOffset(strides, offset)) &&
         strides[1] == 1 && strides[0] == t.getDimSize(1);
}

/// Shuffle mask interleaving two vectors of n lanes: x0, y0, x1, y1, ...
SmallVector<int64_t> interleaveMask(int64_t n) {
  SmallVector<int64_t> mask;
  for (int64_t l = 0; l < n; ++l) {
    mask.push_back(l);
    mask.push_back(n + l);
  }
  return mask;
}

/// Shuffle mask of x86's unpack low/high: within each 128-bit lane of two
/// vectors of n elements (perLane per lane), the lane's low (or high) half
/// of x and of y, element by element alternately.
SmallVector<int64_t> unpackMask(int64_t n, int64_t perLane, bool high) {
  SmallVector<int64_t> mask;
  for (int64_t lane = 0; lane < n / perLane; ++lane)
    for (int64_t i = 0; i < perLane / 2; ++i) {
      int64_t at = lane * perLane + (high ? perLane / 2 : 0) + i;
      mask.push_back(at);
      mask.push_back(n + at);
    }
  return mask;
}

/// Four vectors of `lanes` (8 or 16) elements as blocks of 4: the L-th
/// result (of lanes / 4) holds block L of each input in turn, 16 elements
/// (a transpose of 128-bit lanes: two-source shuffles).
SmallVector<Value> transposeLaneBlocks(OpBuilder &b, Location loc,
                                       ArrayRef<Value> v) {
  int64_t lanes = cast<VectorType>(v[0].getType()).getNumElements();
  // (x's blocks g .. g + count - 1, each followed by y's same block)
  auto pairs = [&](Value x, Value y, int64_t g0, int64_t count) -> Value {
    SmallVector<int64_t> mask;
    for (int64_t g = g0; g < g0 + count; ++g)
      for (int64_t base : {int64_t(0), lanes})
        for (int64_t l = 0; l < 4; ++l)
          mask.push_back(base + 4 * g + l);
    return vector::ShuffleOp::create(b, loc, x, y, mask);
  };
  if (lanes == 8) // (x's block L, y's block L) of 0/1, then of 2/3
    return {vector::ShuffleOp::create(b, loc, pairs(v[0], v[1], 0, 1),
                                      pairs(v[2], v[3], 0, 1), concatMask(8)),
            vector::ShuffleOp::create(b, loc, pairs(v[0], v[1], 1, 1),
                                      pairs(v[2], v[3], 1, 1), concatMask(8))};
  // (x's half h, y's half h)
  auto halves = [&](Value x, Value y, int64_t h) -> Value {
    SmallVector<int64_t> mask;
    for (int64_t base : {0, 16})
      for (int64_t l = 0; l < 8; ++l)
        mask.push_back(base + 8 * h + l);
    return vector::ShuffleOp::create(b, loc, x, y, mask);
  };
  Value lo01 = pairs(v[0], v[1], 0, 2), hi01 = pairs(v[0], v[1], 2, 2),
        lo23 = pairs(v[2], v[3], 0, 2), hi23 = pairs(v[2], v[3], 2, 2);
  return {halves(lo01, lo23, 0), halves(lo01, lo23, 1), halves(hi01, hi23, 0),
          halves(hi01, hi23, 1)};
}

/// Shuffle mask reading a row-major rows x cols block column by column.
SmallVector<int64_t> columnMajorMask(int64_t rows, int64_t cols) {
  SmallVector<int64_t> mask;
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t r = 0; r < rows; ++r)
      mask.push_back(r * cols + c);
  return mask;
}

/// vpmaddwd: i32 lanes of the sums of their two 16-bit products x * y.
Value wordPairProducts(OpBuilder &b, Location loc, Value x, Value y) {
  auto words = cast<VectorType>(x.getType());
  return LLVM::CallIntrinsicOp::create(
             b, loc, VectorType::get({words.getNumElements() / 2}, b.getI32Type()),
             b.getStringAttr("llvm.x86.avx2.pmadd.wd"), ValueRange{x, y})
      .getResult(0);
}

/// emitInt8RowProducts for int8 B on AVX2 without VNNI: P's codes and V's
/// widened to 16 bits and multiplied a pair of keys at a time by vpmaddwd,
/// exact in i32 for any codes. vpmaddubsw's saturating pair sums would
/// need P's codes split at bit 7 (two vpmaddubsw, two vpmaddwd and two adds
/// per 32 products); here 32 products take two vpmaddwd and two adds, and
/// the widening of V (a sign-extending load and a word unpack per 8
/// columns and key pair) is shared by the rows of C in a group.
/// Operand layout: for the 16 columns 16 h .. 16 h + 15 of a 32-column
/// chunk, rows k and k + 1 widened (128-bit lane L holds columns
/// 16 h + 8 L .. + 7) and unpacked word by word, low and high: operand
/// 2 h + s has (V[k, c], V[k + 1, c]) in i32 lane 4 L + i, c = 16 h + 8 L
/// + 4 s + i.
void emitInt8RowProductsByWords(OpBuilder &b, Location loc, Value A, Value B,
                                Value C, int64_t M, int64_t N, int64_t K,
                                int64_t registers, bool overwrite) {
  auto cIdx = [&](int64_t v) {
    return arith::ConstantIndexOp::create(b, loc, v).getResult();
  };
  Type i8 = b.getI8Type(), i16 = b.getI16Type(), i32 = b.getI32Type();
  constexpr int64_t lanes = 8, width = 32;
  auto accType = VectorType::get({lanes}, i32);
  auto wordType = VectorType::get({2 * lanes}, i16);
  auto f32Lanes = VectorType::get({lanes}, b.getF32Type());
  Value zero = splatInt(b, loc, accType, 0);
  // Per row of C 4 accumulators; besides them the 4 operands of one key
  // pair and a row's broadcast pair of P codes.
  int64_t group = std::clamp<int64_t>((registers - 6) / 4, 1, M);
  // Two rows of P^T ([2, M] bytes) column by column: each row of C's two
  // codes next to each other, then zero-extended: one i32 per row of C.
  SmallVector<int64_t> pairColumns = columnMajorMask(2, M);
  for (int64_t n0 = 0; n0 < N; n0 += width)
    for (int64_t m0 = 0; m0 < M; m0 += group) {
      int64_t mEnd = std::min(M, m0 + group);
      SmallVector<Value> init((mEnd - m0) * 4, zero);
      auto kLoop = scf::ForOp::create(
          b, loc, cIdx(0), cIdx(K), cIdx(2), init,
          [&](OpBuilder &b, Location, Value k, ValueRange acc) {
            Value next = arith::AddIOp::create(b, loc, k, cIdx(1));
            SmallVector<Value> operands;
            for (int64_t h = 0; h < 2; ++h) {
              auto widened = [&](Value row) -> Value {
                return arith::ExtSIOp::create(
                    b, loc, wordType,
                    vector::LoadOp::create(
                        b, loc, VectorType::get({2 * lanes}, i8), B,
                        ValueRange{row, cIdx(n0 + 16 * h)}));
              };
              Value first = widened(k), second = widened(next);
              for (bool high : {false, true})
                operands.push_back(vector::ShuffleOp::create(
                    b, loc, first, second,
                    unpackMask(2 * lanes, 8, high)));
            }
            Value block =
                vector::LoadOp::create(b, loc, VectorType::get({2 * M}, i8), A,
                                       ValueRange{k, cIdx(0)});
            Value pairs = vector::BitCastOp::create(
                b, loc, VectorType::get({M}, i32),
                arith::ExtUIOp::create(
                    b, loc, VectorType::get({2 * M}, i16),
                    vector::ShuffleOp::create(b, loc, block, block,
                                              pairColumns)));
            SmallVector<Value> sums;
            for (int64_t m = m0; m < mEnd; ++m) {
              Value p = vector::BitCastOp::create(
                  b, loc, wordType,
                  vector::BroadcastOp::create(
                      b, loc, accType,
                      vector::ExtractOp::create(b, loc, pairs,
                                                ArrayRef<int64_t>{m})));
              for (int64_t c = 0; c < 4; ++c)
                sums.push_back(arith::AddIOp::create(
                    b, loc, acc[(m - m0) * 4 + c],
                    wordPairProducts(b, loc, p, operands[c])));
            }
            scf::YieldOp::create(b, loc, sums);
          });
      for (int64_t m = m0; m < mEnd; ++m) {
        Value s[4];
        for (int64_t c = 0; c < 4; ++c)
          s[c] = arith::SIToFPOp::create(b, loc, f32Lanes,
                                         kLoop.getResult((m - m0) * 4 + c));
        for (int64_t h = 0; h < 2; ++h) {
          // Columns 16 h .. 16 h + 15 in order: the 128-bit lanes of
          // operands 2 h and 2 h + 1 alternately.
          Value sum = vector::ShuffleOp::create(
              b, loc, s[2 * h], s[2 * h + 1],
              ArrayRef<int64_t>{0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13,
                                14, 15});
          SmallVector<Value, 2> at = {cIdx(m), cIdx(n0 + 16 * h)};
          if (!overwrite)
            sum = arith::AddFOp::create(
                b, loc,
                vector::LoadOp::create(b, loc,
                                       cast<VectorType>(sum.getType()), C, at),
                sum);
          vector::StoreOp::create(b, loc, sum, C, at);
        }
      }
    }
}

/// C[m, n] += sum_k A[k, m] * B[k, n] with A unsigned 8-bit codes (P^T,
/// contiguous [K, M]) and B signed ones (V's codes), K % 4 == 0, lanes 16
/// or 8, N % (4 * lanes) == 0: per 4 rows of B and 4 * lanes columns, the
/// rows' bytes are
/// interleaved within 128-bit lanes (x86 unpacks, which leave their
/// sources intact: bytes of row pairs, then 16-bit pairs of those) so each
/// i32 lane holds one column's 4 codes, and every column m of A adds
/// vpdpbusd(broadcast of its 4 codes, lane bytes) into its accumulators
/// (without VNNI: vpmaddubsw pairs, A's codes split at bit 7 for int8 B;
/// rows of C in groups whose accumulators fit the registers);
/// A's 4 x M block is transposed by one byte shuffle. Accumulator j ends
/// with column 16 L + 4 j + i in lane 4 L + i: a transpose of 128-bit lanes
/// per row of C puts them back in order.
/// With int4B, B's int4 codes are packed two per byte ([K, N / 2]): each
/// row's 2 * lanes packed bytes become its chunk's even columns, then its
/// odd ones, sign-extended; the sums are put back in column order.
/// With `overwrite` (C was just zero-filled), the sums are stored instead
/// of added to C.
void emitInt8RowProducts(OpBuilder &b, Location loc, ByteDots byteDots, Value A,
                         Value B, Value C, int64_t M, int64_t N, int64_t K,
                         int64_t lanes, int64_t registers, bool int4B = false,
                         bool overwrite = false) {
  if (byteDots == ByteDots::maddubs && lanes == 8 && !int4B)
    return emitInt8RowProductsByWords(b, loc, A, B, C, M, N, K, registers,
                                      overwrite);
  auto cIdx = [&](int64_t v) {
    return arith::ConstantIndexOp::create(b, loc, v).getResult();
  };
  Type i8 = b.getI8Type(), i16 = b.getI16Type(), i32 = b.getI32Type();
  int64_t width = 4 * lanes; // columns per chunk
  auto rowBytes = VectorType::get({width}, i8);
  auto accType = VectorType::get({lanes}, i32);
  auto f32Lanes = VectorType::get({lanes}, b.getF32Type());
  Value zero = arith::ConstantOp::create(
      b, loc, accType, DenseElementsAttr::get(accType, b.getI32IntegerAttr(0)));
  SmallVector<int64_t> transpose = columnMajorMask(4, M);
  // 4 accumulators per row of C, 4 operands, the broadcast and
  // temporaries (more for the split codes without VNNI).
  bool split = byteDots != ByteDots::vnni && !int4B;
  int64_t group =
      std::clamp<int64_t>((registers - (split ? 12 : 10)) / 4, 1, M);
  for (int64_t n0 = 0; n0 < N; n0 += width)
    for (int64_t m0 = 0; m0 < M; m0 += group) {
      int64_t mEnd = std::min(M, m0 + group);
      Value col = cIdx(n0);
      SmallVector<Value> init((mEnd - m0) * 4, zero);
      auto kLoop = scf::ForOp::create(
          b, loc, cIdx(0), cIdx(K), cIdx(4), init,
          [&](OpBuilder &b, Location, Value k, ValueRange acc) {
            Value rows[4];
            for (int64_t t = 0; t < 4; ++t) {
              Value row = arith::AddIOp::create(b, loc, k, cIdx(t));
              if (!int4B) {
                rows[t] = vector::LoadOp::create(b, loc, rowBytes, B,
                                                 ValueRange{row, col});
                continue;
              }
              auto [lo, hi] =
                  offsetNibbles(b, loc,
                                vector::LoadOp::create(
                                    b, loc, VectorType::get({width / 2}, i8), B,
                                    ValueRange{row, cIdx(n0 / 2)}));
              rows[t] = arith::SubIOp::create(
                  b, loc,
                  vector::ShuffleOp::create(b, loc, lo, hi,
                                            concatMask(width / 2)),
                  splatInt(b, loc, rowBytes, 8));
            }
            // Bytes of rows 0/1 and 2/3 interleaved (low and high half of
            // each 128-bit lane), then 16-bit pairs of those: operand j's
            // i32 lane 4 L + i holds column 16 L + 4 j + i of the 4 rows.
            auto halfType = VectorType::get({width / 2}, i16);
            auto bytePairs = [&](Value x, Value y, bool high) -> Value {
              return vector::BitCastOp::create(
                  b, loc, halfType,
                  vector::ShuffleOp::create(b, loc, x, y,
                                            unpackMask(width, 16, high)));
            };
            Value lo01 = bytePairs(rows[0], rows[1], false),
                  hi01 = bytePairs(rows[0], rows[1], true),
                  lo23 = bytePairs(rows[2], rows[3], false),
                  hi23 = bytePairs(rows[2], rows[3], true);
            SmallVector<Value> operands;
            for (auto [x, y] : {std::pair{lo01, lo23}, std::pair{hi01, hi23}})
              for (bool high : {false, true})
                operands.push_back(vector::BitCastOp::create(
                    b, loc, rowBytes,
                    vector::ShuffleOp::create(b, loc, x, y,
                                              unpackMask(width / 2, 8, high))));
            Value block =
                vector::LoadOp::create(b, loc, VectorType::get({4 * M}, i8), A,
                                       ValueRange{k, cIdx(0)});
            Value words = vector::BitCastOp::create(
                b, loc, VectorType::get({M}, i32),
                vector::ShuffleOp::create(b, loc, block, block, transpose));
            SmallVector<Value> next;
            for (int64_t m = m0; m < mEnd; ++m) {
              Value p = vector::BitCastOp::create(
                  b, loc, rowBytes,
                  vector::BroadcastOp::create(
                      b, loc, accType,
                      vector::ExtractOp::create(b, loc, words,
                                                ArrayRef<int64_t>{m})));
              for (int64_t c = 0; c < 4; ++c) {
                Value sum = acc[(m - m0) * 4 + c];
                next.push_back(
                    split
                        ? wideUnsignedDot(b, loc, byteDots, sum, p, operands[c])
                        : int8Dot(b, loc, byteDots, sum, p, operands[c]));
              }
            }
            scf::YieldOp::create(b, loc, next);
          });
      for (int64_t m = m0; m < mEnd; ++m) {
        SmallVector<Value> sums;
        for (int64_t c = 0; c < 4; ++c)
          sums.push_back(arith::SIToFPOp::create(
              b, loc, f32Lanes, kLoop.getResult((m - m0) * 4 + c)));
        // blocks[L]: the chunk's columns 16 L .. 16 L + 15 in order (int4:
        // of its even columns, then its odd ones).
        SmallVector<Value> blocks = transposeLaneBlocks(b, loc, sums);
        auto addTo = [&](Value sum, int64_t column) {
          SmallVector<Value, 2> at = {cIdx(m), cIdx(n0 + column)};
          auto type = cast<VectorType>(sum.getType());
          if (!overwrite)
            sum = arith::AddFOp::create(
                b, loc, vector::LoadOp::create(b, loc, type, C, at), sum);
          vector::StoreOp::create(b, loc, sum, C, at);
        };
        int64_t numBlocks = lanes / 4;
        if (!int4B) {
          for (int64_t L = 0; L < numBlocks; ++L)
            addTo(blocks[L], 16 * L);
          continue;
        }
        // Even columns 2p (the first half of the blocks) and odd ones 2p + 1
        // (the second half) interleaved.
        for (int64_t c = 0; c < numBlocks / 2; ++c)
          addTo(vector::ShuffleOp::create(b, loc, blocks[c],
                                          blocks[c + numBlocks / 2],
                                          interleaveMask(16)),
                32 * c);
      }
    }
}

/// C[m, n] += sum_k A[k, m] * B[k, n] with A bf16 (P^T, contiguous [K, M])
/// and B fp8 codes (V's), K % 2 == 0, N % (4 * lanes) == 0: per key pair
/// and 4 * lanes columns, the two rows' codes are interleaved column by
/// column and become bf16 pairs by bit moves (the value times 2^-bias, see
/// Fp8AsBf16), and each column m of A adds vdpbf16ps(broadcast of its two
/// P values, pairs) into its accumulators. P goes in times 2^(bias / 2) and
/// the sums come back by 2^(bias - bias / 2), so products stay normal.
void emitBf16RowProducts(OpBuilder &b, Location loc, Value A, Value B,
                         Value C, int64_t M, int64_t N, int64_t K,
                         int64_t lanes, mlir::attn::KVQuant codes) {
  auto cIdx = [&](int64_t v) {
    return arith::ConstantIndexOp::create(b, loc, v).getResult();
  };
  Type i8 = b.getI8Type(), i16 = b.getI16Type(), i32 = b.getI32Type();
  Type bf16 = b.getBF16Type();
  FloatType f32 = b.getF32Type();
  Fp8AsBf16 format = fp8AsBf16(codes);
  int64_t width = 4 * lanes; // columns per chunk
  auto rowBytes = VectorType::get({width}, i8);
  auto rowWords = VectorType::get({width}, i16);
  auto pairType = VectorType::get({2 * lanes}, bf16);
  auto accType = VectorType::get({lanes}, f32);
  auto splat = [&](VectorType type, Attribute value) -> Value {
    return arith::ConstantOp::create(b, loc, type,
                                     DenseElementsAttr::get(type, value));
  };
  Value zero = splat(accType, b.getF32FloatAttr(0.0f));
  auto pType = VectorType::get({2 * M}, f32);
  Value up = splat(pType, b.getF32FloatAttr(std::ldexp(1.0f, int(format.bias / 2))));
  Value down = splat(accType, b.getF32FloatAttr(
                                  std::ldexp(1.0f, int(format.bias - format.bias / 2))));
  SmallVector<int64_t> interleave = interleaveMask(width),
                       pairOfColumn = columnMajorMask(2, M);
  // P's key pairs, scaled up and rounded to bf16 pairs once per matmul
  // ([K / 2, M] of 32-bit pairs): per chunk of columns and key pair they
  // took a conversion, a rounding and a shuffle per row (about 20
  // instructions beside 16 vdpbf16ps, D = 128); now each row's pair is one
  // broadcast load.
  Value pPairs = memref::AllocaOp::create(
      b, loc, MemRefType::get({K / 2, M}, i32), b.getI64IntegerAttr(64));
  scf::ForOp::create(
      b, loc, cIdx(0), cIdx(K / 2), cIdx(1), ValueRange{},
      [&](OpBuilder &b, Location, Value pair, ValueRange) {
        // P[k, m] and P[k + 1, m] side by side, scaled up.
        Value k = arith::MulIOp::create(b, loc, pair, cIdx(2));
        Value p = vector::LoadOp::create(
            b, loc, VectorType::get({2 * M}, bf16), A, ValueRange{k, cIdx(0)});
        p = arith::TruncFOp::create(
            b, loc, VectorType::get({2 * M}, bf16),
            arith::MulFOp::create(
                b, loc, arith::ExtFOp::create(b, loc, pType, p), up));
        vector::StoreOp::create(
            b, loc,
            vector::BitCastOp::create(
                b, loc, VectorType::get({M}, i32),
                vector::ShuffleOp::create(b, loc, p, p, pairOfColumn)),
            pPairs, ValueRange{pair, cIdx(0)});
        scf::YieldOp::create(b, loc);
      });
  for (int64_t n0 = 0; n0 < N; n0 += width) {
    Value col = cIdx(n0);
    SmallVector<Value> init(M * 4, zero);
    auto kLoop = scf::ForOp::create(
        b, loc, cIdx(0), cIdx(K / 2), cIdx(1), init,
        [&](OpBuilder &b, Location, Value pair, ValueRange acc) {
          Value k = arith::MulIOp::create(b, loc, pair, cIdx(2));
          // Column j's codes of rows k and k + 1 side by side, as bf16.
          Value rows[2];
          for (int64_t t = 0; t < 2; ++t)
            rows[t] = arith::ExtSIOp::create(
                b, loc, rowWords,
                vector::LoadOp::create(
                    b, loc, rowBytes, B,
                    ValueRange{arith::AddIOp::create(b, loc, k, cIdx(t)),
                               col}));
          Value w = vector::ShuffleOp::create(b, loc, rows[0], rows[1],
                                              interleave);
          Value bits = signMagnitudeBits(b, loc, w, format.shift);
          SmallVector<Value> pairs;
          for (int64_t c = 0; c < 4; ++c)
            pairs.push_back(vector::BitCastOp::create(
                b, loc, pairType,
                vector::ExtractStridedSliceOp::create(
                    b, loc, bits, ArrayRef<int64_t>{c * 2 * lanes},
                    ArrayRef<int64_t>{2 * lanes}, ArrayRef<int64_t>{1})));
          SmallVector<Value> next;
          for (int64_t m = 0; m < M; ++m) {
            Value pm = vector::BitCastOp::create(
                b, loc, pairType,
                vector::BroadcastOp::create(
                    b, loc, VectorType::get({lanes}, i32),
                    memref::LoadOp::create(b, loc, pPairs,
                                           ValueRange{pair, cIdx(m)})));
            for (int64_t c = 0; c < 4; ++c)
              next.push_back(bf16Dot(b, loc, acc[m * 4 + c], pm, pairs[c]));
          }
          scf::YieldOp::create(b, loc, next);
        });
    for (int64_t m = 0; m < M; ++m)
      for (int64_t c = 0; c < 4; ++c) {
        SmallVector<Value, 2> at = {cIdx(m), cIdx(n0 + c * lanes)};
        Value old = vector::LoadOp::create(b, loc, accType, C, at);
        vector::StoreOp::create(
            b, loc,
            vector::FMAOp::create(b, loc, kLoop.getResult(m * 4 + c), down,
                                  old),
            C, at);
      }
  }
}

/// Rows of A per block of the dot form (C[m, n] += A[m, k] * B[n, k]) for
/// N columns: R x N accumulators and R + N loads live at once.
int64_t dotRowBlock(int64_t N, int64_t lanes, int64_t registers) {
  int64_t rows = std::clamp<int64_t>(
      powerOfTwoFloor(std::max<int64_t>(1, (registers - N) / (N + 1))), 1, 4);
  // Prefer exactly `lanes` accumulators: their sums reduce together.
  if (lanes % N == 0 && lanes / N <= rows * 2 &&
      (lanes / N) * (N + 1) + N <= registers)
    rows = lanes / N;
  return rows;
}

/// Whether `op` is preceded (past views only) by a linalg.fill of zero
/// into C, which it then erases: `op` may store its sums instead of adding
/// them.
bool takeZeroFill(RewriterBase &rewriter, Operation *op, Value C) {
  for (Operation *prev = op->getPrevNode(); prev; prev = prev->getPrevNode()) {
    if (isa<memref::SubViewOp>(prev))
      continue;
    auto fill = dyn_cast<linalg::FillOp>(prev);
    if (!fill || fill.getDpsInits()[0] != C)
      return false;
    auto zero = fill.getDpsInputs()[0].getDefiningOp<arith::ConstantOp>();
    auto value = zero ? dyn_cast<FloatAttr>(zero.getValue()) : FloatAttr();
    if (!value || !value.getValue().isZero())
      return false;
    rewriter.eraseOp(fill);
    return true;
  }
  return false;
}

/// A static 2-D f32 buffer with contiguous rows (a tile, or a subview of
/// one with static strides), which vector.load reads row by row.
bool isStaticF32Buffer(Value v) {
  auto t = dyn_cast<MemRefType>(v.getType());
  if (!t || t.getRank() != 2 || !t.hasStaticShape() ||
      !t.getElementType().isF32())
    return false;
  SmallVector<int64_t> strides;
  int64_t offset;
  if (failed(t.getStridesAndOffset(strides, offset)))
    return false;
  // (Any offset: e.g. one group of rows of an accumulator.)
  return strides[1] == 1 && !ShapedType::isDynamic(strides[0]);
}

/// An input operand: a static f32 buffer, or a static-shaped 2-D view
/// with contiguous rows anywhere in memory (a cache's key tile read in
/// place) of f32, f16, bf16 or int8 codes, converted as it is loaded.
bool isReadableInput(Value v) {
  if (isStaticF32Buffer(v))
    return true;
  auto t = dyn_cast<MemRefType>(v.getType());
  Type elt = t ? t.getElementType() : Type();
  if (!t || t.getRank() != 2 || !t.hasStaticShape() ||
      !(elt.isF32() || elt.isF16() || elt.isBF16() || elt.isInteger(8)))
    return false;
  SmallVector<int64_t> strides;
  int64_t offset;
  return succeeded(t.getStridesAndOffset(strides, offset)) && strides[1] == 1;
}

/// The buffer `view` takes every second column of, starting at `parity`
/// (the views createInt4KeyDots / createInt4ValueProducts read), if it is
/// one.
Value strideTwoSource(Value view, int64_t parity) {
  auto subview = view.getDefiningOp<memref::SubViewOp>();
  if (!subview)
    return {};
  auto source = cast<MemRefType>(subview.getSource().getType());
  if (source.getRank() != 2 || !source.hasStaticShape() ||
      subview.getStaticOffsets() != ArrayRef<int64_t>{0, parity} ||
      subview.getStaticStrides() != ArrayRef<int64_t>{1, 2} ||
      subview.getStaticSizes() !=
          ArrayRef<int64_t>{source.getDimSize(0), source.getDimSize(1) / 2})
    return {};
  return subview.getSource();
}

/// packed's int4 codes ([R, C] i8, two per byte) one per byte, sign-
/// extended, in a new [R, 2C] buffer.
Value unpackInt4(OpBuilder &b, Location loc, Value packed) {
  auto type = cast<MemRefType>(packed.getType());
  int64_t R = type.getDimSize(0), C = type.getDimSize(1);
  Value out = memref::AllocaOp::create(
      b, loc, MemRefType::get({R, 2 * C}, b.getI8Type()),
      b.getI64IntegerAttr(64));
  auto cIdx = [&](int64_t v) {
    return arith::ConstantIndexOp::create(b, loc, v).getResult();
  };
  auto forTo = [&](OpBuilder &b, int64_t n,
                   function_ref<void(OpBuilder &, Value)> body) {
    scf::ForOp::create(b, loc, cIdx(0), cIdx(n), cIdx(1), ValueRange{},
                       [&](OpBuilder &b, Location, Value i, ValueRange) {
                         body(b, i);
                         scf::YieldOp::create(b, loc);
                       });
  };
  forTo(b, R, [&](OpBuilder &b, Value r) {
    forTo(b, C, [&](OpBuilder &b, Value c) {
      Value byte = memref::LoadOp::create(b, loc, packed, ValueRange{r, c});
      auto [lo, hi] = mlir::attn::splitInt4Codes(b, loc, byte);
      Value col = arith::MulIOp::create(b, loc, c, cIdx(2));
      memref::StoreOp::create(b, loc, lo, out, ValueRange{r, col});
      memref::StoreOp::create(
          b, loc, hi, out,
          ValueRange{r, arith::AddIOp::create(b, loc, col, cIdx(1))});
    });
  });
  return out;
}

/// Each load of a tile's rows read in place (a 2-D view, with a static row
/// count, of a kernel argument: K or V rows of a cache) inside a loop also
/// prefetches the same offset one tile further on, the rows the next key
/// tile will read. Decode streams the cache once, and its dot loops do
/// enough work per byte that the loads themselves stalled (perf: samples
/// on the instructions waiting for them; AVX2 int8 decode read 9.6 GB/s
/// where bf16's loads, with less work per byte, reached 13.8). Not for
/// views placed by a value loaded from memory (a page table): the rows
/// after a page are another sequence's, and prefetching them cost paged
/// decode 10-25%.
void prefetchNextTile(func::FuncOp func) {
  auto placedByLoad = [](memref::SubViewOp view) {
    for (Value offset : view.getOffsets()) {
      SetVector<Operation *> slice;
      // (Not through loops' induction variables: a loop bound read from
      // memory, e.g. a per-batch length, does not place the view.)
      BackwardSliceOptions options;
      options.omitBlockArguments = true;
      (void)getBackwardSlice(offset, &slice, options);
      if (offset.getDefiningOp<memref::LoadOp>() ||
          llvm::any_of(slice, [](Operation *op) {
            return isa<memref::LoadOp>(op);
          }))
        return true;
    }
    return false;
  };
  // Whether `view` reads the cache in place: views (not placed by a load)
  // of a kernel argument, or a choice (scf.if) one of whose sides is one,
  // as decode's tiles choose between the cache and the raw copy of a
  // partial last tile (prefetching past that copy reads the stack: no
  // fault, no use, once per row group).
  // (Memoized: a tile's view is loaded from at every row and step.)
  DenseMap<Value, bool> known;
  std::function<bool(Value)> readsCache = [&](Value start) {
    if (auto it = known.find(start); it != known.end())
      return it->second;
    return known[start] = [&, view = start]() mutable {
      while (Operation *def = view.getDefiningOp()) {
        if (auto sub = dyn_cast<memref::SubViewOp>(def)) {
          if (placedByLoad(sub))
            return false;
          view = sub.getSource();
        } else if (auto castOp = dyn_cast<memref::CastOp>(def)) {
          view = castOp.getSource();
        } else if (auto reinterpret =
                       dyn_cast<memref::ReinterpretCastOp>(def)) {
          view = reinterpret.getSource();
        } else if (auto choice = dyn_cast<scf::IfOp>(def)) {
          unsigned i = cast<OpResult>(view).getResultNumber();
          for (Region *side :
               {&choice.getThenRegion(), &choice.getElseRegion()})
            if (!side->empty() &&
                readsCache(cast<scf::YieldOp>(side->front().getTerminator())
                               .getOperand(i)))
              return true;
          return false;
        } else {
          return false; // a buffer of the kernel's own (alloca)
        }
      }
      auto argument = dyn_cast<BlockArgument>(view);
      return argument && argument.getOwner()->isEntryBlock() &&
             isa<func::FuncOp>(argument.getOwner()->getParentOp());
    }();
  };
  SmallVector<vector::LoadOp> loads;
  func.walk([&](vector::LoadOp load) {
    auto type = dyn_cast<MemRefType>(load.getBase().getType());
    if (type && type.getRank() == 2 && !type.isDynamicDim(0) &&
        load->getParentOfType<scf::ForOp>() && readsCache(load.getBase()))
      loads.push_back(load);
  });
  for (vector::LoadOp load : loads) {
    OpBuilder b(load);
    Location loc = load.getLoc();
    SmallVector<Value> at(load.getIndices());
    at[0] = arith::AddIOp::create(
        b, loc, at[0],
        arith::ConstantIndexOp::create(
            b, loc, cast<MemRefType>(load.getBase().getType()).getDimSize(0)));
    memref::PrefetchOp::create(b, loc, load.getBase(), at, /*isWrite=*/false,
                               /*localityHint=*/3, /*isDataCache=*/true);
  }
}

struct AttnCPUVectorizeMatmulPass final
    : mlir::attn::cpu::impl::AttnCPUVectorizeMatmulPassBase<
          AttnCPUVectorizeMatmulPass> {
  using AttnCPUVectorizeMatmulPassBase::AttnCPUVectorizeMatmulPassBase;
  void runOnOperation() override {
    if (vectorBits < 32 || registers < 4) {
      getOperation().emitError("expected vector-bits >= 32 and registers "
                               ">= 4");
      return signalPassFailure();
    }
    SmallVector<linalg::MatmulOp> ops;
    getOperation().walk([&](linalg::MatmulOp op) { ops.push_back(op); });
    SmallVector<linalg::GenericOp> int4Ops;
    getOperation().walk([&](linalg::GenericOp op) {
      if (op->hasAttr(mlir::attn::kInt4PairsAttr))
        int4Ops.push_back(op);
    });
    std::optional<ByteDots> dots = mlir::attn::cpu::parseByteDots(byteDots);
    if (!dots) {
      getOperation().emitError("unknown byte-dots '")
          << byteDots << "' (expected none, vnni or maddubs)";
      return signalPassFailure();
    }
    // Byte dot products come in ymm and zmm forms.
    if (vectorBits != 256 && vectorBits != 512)
      dots = ByteDots::none;
    IRRewriter rewriter(&getContext());
    for (linalg::MatmulOp op : ops)
      (void)mlir::attn::cpu::vectorizeMatmul(rewriter, op, vectorBits / 32,
                                             registers, *dots,
                                             bf16Dots && vectorBits == 512);
    for (linalg::GenericOp op : int4Ops)
      (void)mlir::attn::cpu::vectorizeInt4Product(
          rewriter, op, vectorBits / 32, registers, *dots,
          bf16Dots && vectorBits == 512);
    prefetchNextTile(getOperation());
  }
};

} // namespace

std::optional<ByteDots> mlir::attn::cpu::parseByteDots(StringRef name) {
  return llvm::StringSwitch<std::optional<ByteDots>>(name)
      .Case("none", ByteDots::none)
      .Case("vnni", ByteDots::vnni)
      .Case("maddubs", ByteDots::maddubs)
      .Default(std::nullopt);
}

LogicalResult mlir::attn::cpu::vectorizeMatmul(RewriterBase &rewriter,
                                               linalg::MatmulOp op,
                                               int64_t lanes, int64_t registers,
                                               ByteDots byteDots,
                                               bool bf16Dots) {
  bool int8Dots = byteDots != ByteDots::none;
  if (!op.hasPureBufferSemantics())
    return rewriter.notifyMatchFailure(op, "expected buffers");
  // C[m, n] += A[m, k] * B[k, n], or A read as A[k, m].
  MLIRContext *ctx = op.getContext();
  AffineExpr m, n, k;
  bindDims(ctx, m, n, k);
  auto map = [&](AffineExpr a, AffineExpr b) {
    return AffineMap::get(3, 0, {a, b}, ctx);
  };
  SmallVector<AffineMap> maps = op.getIndexingMapsArray();
  bool transposedA = false, transposedB = false;
  if (maps == SmallVector<AffineMap>{map(m, k), map(k, n), map(m, n)})
    transposedA = false;
  else if (maps == SmallVector<AffineMap>{map(k, m), map(k, n), map(m, n)})
    transposedA = true;
  else if (maps == SmallVector<AffineMap>{map(m, k), map(n, k), map(m, n)})
    transposedB = true;
  else
    return rewriter.notifyMatchFailure(op, "unsupported indexing maps");
  Value A = op.getDpsInputs()[0], B = op.getDpsInputs()[1],
        C = op.getDpsInits()[0];
  if (!isReadableInput(A) || !isReadableInput(B) || !isStaticF32Buffer(C))
    return rewriter.notifyMatchFailure(op, "expected static f32 buffers");
  int64_t M = cast<MemRefType>(C.getType()).getDimSize(0);
  int64_t N = cast<MemRefType>(C.getType()).getDimSize(1);
  int64_t K = cast<MemRefType>(B.getType()).getDimSize(transposedB ? 1 : 0);

  auto isInt8 = [](Value v) {
    return cast<MemRefType>(v.getType()).getElementType().isInteger(8);
  };
  if (transposedB) {
    // R rows x N columns of accumulators, R loads of A and N of B live.
    if (K % lanes != 0 || N * 2 + 2 > registers)
      return rewriter.notifyMatchFailure(op, "dot form needs K % lanes == 0");
    int64_t rows = dotRowBlock(N, lanes, registers);
    // int8 codes times int8 codes (not fp8, which are not integers).
    bool dots = int8Dots && isInt8(A) && isInt8(B) &&
                codesOf(op) == mlir::attn::KVQuant::int8 &&
                K % (4 * lanes) == 0;
    // fp8 codes times f32 rows (decode's K codes . Q's rows, which the
    // tiler rounds to bf16 already) as bf16 dot products.
    mlir::attn::KVQuant kind = codesOf(op);
    bool fp8 = bf16Dots && isInt8(A) &&
               cast<MemRefType>(B.getType()).getElementType().isF32() &&
               mlir::attn::isFp8(kind) &&
               K % (2 * lanes) == 0;
    OpBuilder::InsertionGuard guard(rewriter);
    rewriter.setInsertionPoint(op);
    emitDotProducts(rewriter, op.getLoc(), A, B, C, M, N, K, lanes, rows, kind,
                    dots ? byteDots : ByteDots::none, fp8);
    rewriter.eraseOp(op);
    return success();
  }

  auto isBf16 = [](Value v) {
    return cast<MemRefType>(v.getType()).getElementType().isBF16();
  };
  if (bf16Dots && transposedA && isBf16(A) && isInt8(B) &&
      isStaticContiguous(A) && mlir::attn::isFp8(codesOf(op)) &&
      K % 2 == 0 && N % (4 * lanes) == 0 && M * 4 + 12 <= registers) {
    OpBuilder::InsertionGuard guard(rewriter);
    rewriter.setInsertionPoint(op);
    emitBf16RowProducts(rewriter, op.getLoc(), A, B, C, M, N, K, lanes,
                        codesOf(op));
    rewriter.eraseOp(op);
    return success();
  }

  bool unsignedA = op->hasAttr(mlir::attn::kUnsignedLhsAttr);
  if (int8Dots && (lanes == 16 || lanes == 8) && unsignedA && transposedA &&
      isInt8(A) && isInt8(B) && isStaticContiguous(A) &&
      codesOf(op) == mlir::attn::KVQuant::int8 && K % 4 == 0 &&
      N % (4 * lanes) == 0 && registers >= 16) {
    OpBuilder::InsertionGuard guard(rewriter);
    rewriter.setInsertionPoint(op);
    emitInt8RowProducts(rewriter, op.getLoc(), byteDots, A, B, C, M, N, K,
                        lanes, registers, /*int4B=*/false,
                        takeZeroFill(rewriter, op, C));
    rewriter.eraseOp(op);
    return success();
  }

  auto [v, rows] = rowBlockShape(M, N, lanes, registers);
  int64_t chunk = v * lanes;

  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  Location loc = op.getLoc();
  // Every element of C is written below, so a zero fill right before
  // (a tile's S = K Q^T) need not be stored and loaded back.
  bool zeroC = takeZeroFill(rewriter, op, C);
  for (int64_t n0 = 0; n0 < N; n0 += chunk) {
    int64_t nc = std::min(chunk, N - n0);
    // Blocks of `rows`, then the rows left in power-of-two blocks (M = 64
    // in blocks of 6: ten of them and one of 4).
    for (int64_t begin = 0, block = rows; begin < M;
         block = powerOfTwoFloor(M - begin)) {
      int64_t end = begin + (M - begin) / block * block;
      emitRowBlocks(rewriter, loc, A, transposedA, B, C, K, n0, nc, begin,
                    end, block, codesOf(op), unsignedA, zeroC);
      begin = end;
    }
  }
  rewriter.eraseOp(op);
  return success();
}

LogicalResult mlir::attn::cpu::vectorizeInt4Product(
    RewriterBase &rewriter, linalg::GenericOp op, int64_t lanes,
    int64_t registers, ByteDots byteDots, bool bf16Dots) {
  bool int8Dots = byteDots != ByteDots::none;
  if (!op->hasAttr(mlir::attn::kInt4PairsAttr) || !op.hasPureBufferSemantics())
    return rewriter.notifyMatchFailure(op, "expected an int4 tile product");
  auto inputs = op.getDpsInputs();
  auto inits = op.getDpsInits();
  MLIRContext *ctx = op.getContext();
  AffineExpr m, n, k;
  bindDims(ctx, m, n, k);
  auto map = [&](AffineExpr a, AffineExpr b) {
    return AffineMap::get(3, 0, {a, b}, ctx);
  };
  auto dimSize = [](Value v, unsigned d) {
    return cast<MemRefType>(v.getType()).getDimSize(d);
  };
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  Location loc = op.getLoc();
  // Where the nibble form does not apply, the packed operand is unpacked
  // to one code per byte and the tile takes the int8 matmul's way.
  auto viaUnpacked = [&](ValueRange operands, Value C,
                         ArrayRef<AffineMap> maps,
                         bool unsignedLhs) -> LogicalResult {
    auto matmul = linalg::MatmulOp::create(
        rewriter, loc, operands, ValueRange{C},
        {rewriter.getNamedAttr("indexing_maps",
                               rewriter.getAffineMapArrayAttr(maps))});
    if (unsignedLhs)
      matmul->setAttr(mlir::attn::kUnsignedLhsAttr, rewriter.getUnitAttr());
    rewriter.eraseOp(op);
    return vectorizeMatmul(rewriter, matmul, lanes, registers, byteDots,
                           bf16Dots);
  };

  if (inputs.size() == 3 && inits.size() == 1) {
    // S^T = K (packed) . Q^T.
    Value A = inputs[0], Q = strideTwoSource(inputs[1], 0),
          C = inits[0];
    if (!Q || Q != strideTwoSource(inputs[2], 1) || !isReadableInput(A) ||
        !isStaticContiguous(Q) || !isStaticF32Buffer(C))
      return rewriter.notifyMatchFailure(op, "unexpected key dot operands");
    int64_t M = dimSize(C, 0), N = dimSize(C, 1), K = dimSize(Q, 1);
    SmallVector<AffineMap> maps = {map(m, k), map(n, k), map(m, n)};
    if (!int8Dots || K % (4 * lanes) != 0 || N * 2 + 2 > registers)
      return viaUnpacked({unpackInt4(rewriter, loc, A), Q}, C, maps, false);
    emitDotProducts(rewriter, loc, A, Q, C, M, N, K, lanes,
                    dotRowBlock(N, lanes, registers), mlir::attn::KVQuant::int8,
                    byteDots,
                    /*fp8Dots=*/false, /*int4A=*/true);
    rewriter.eraseOp(op);
    return success();
  }
  if (inputs.size() == 2 && inits.size() == 2) {
    // C = P^T (unsigned codes) . V (packed).
    Value P = inputs[0], V = inputs[1], C = strideTwoSource(inits[0], 0);
    if (!C || C != strideTwoSource(inits[1], 1) || !isStaticContiguous(P) ||
        !isReadableInput(V) || !isStaticF32Buffer(C))
      return rewriter.notifyMatchFailure(op, "unexpected value operands");
    int64_t M = dimSize(C, 0), N = dimSize(C, 1), K = dimSize(P, 0);
    SmallVector<AffineMap> maps = {map(k, m), map(k, n), map(m, n)};
    if (!int8Dots || (lanes != 16 && lanes != 8) || K % 4 != 0 ||
        N % (4 * lanes) != 0 || registers < 16)
      return viaUnpacked({P, unpackInt4(rewriter, loc, V)}, C, maps, true);
    emitInt8RowProducts(rewriter, loc, byteDots, P, V, C, M, N, K, lanes,
                        registers, /*int4B=*/true,
                        takeZeroFill(rewriter, op, C));
    rewriter.eraseOp(op);
    return success();
  }
  return rewriter.notifyMatchFailure(op, "unexpected int4 product");
}
