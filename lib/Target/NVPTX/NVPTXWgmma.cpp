//===- NVPTXWgmma.cpp - wgmma and its shared-memory descriptors -----------===//
//
// The sm_90a matmuls of the tensor-core attention kernel: wgmma.mma_async
// chains per warpgroup as inline asm, the matrix descriptors of the
// shared tiles they read (layouts: NVPTXKernel.cpp's top comment), and
// P as the register A operand of O += P V.
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

/// The shared-window address of a workgroup buffer, as i64.
Value GpuAttentionBuilder::sharedAddress(OpBuilder &b, Value mem) {
  Value index = memref::ExtractAlignedPointerAsIndexOp::create(b, loc, mem);
  return arith::IndexCastUIOp::create(b, loc, b.getI64Type(), index);
}

/// base + stage * tileBytes: the buffer of the tile being computed.
Value GpuAttentionBuilder::stageAddress(OpBuilder &b, Value base,
                                        int64_t tileBytes) {
  Value offset = arith::MulIOp::create(
      b, loc, arith::IndexCastUIOp::create(b, loc, b.getI64Type(), stage),
      arith::ConstantIntOp::create(b, loc, tileBytes, 64));
  return arith::AddIOp::create(b, loc, base, offset);
}

/// A wgmma matrix descriptor (PTX ISA "Matrix Descriptor Format"): start
/// address, leading and stride byte offsets, each >> 4, base offset 0
/// (every swizzled tile is 8 W-aligned), and in bits 62-63 the layout:
/// 0 no swizzle, 1 128-byte, 2 64-byte, 3 32-byte swizzle.
Value GpuAttentionBuilder::descriptor(OpBuilder &b, Value base, int64_t offset,
                                      int64_t lbo, int64_t sbo,
                                      int64_t swizzleBytes) {
  auto c64 = [&](int64_t v) {
    return arith::ConstantIntOp::create(b, loc, v, 64).getResult();
  };
  Value addr = arith::AddIOp::create(b, loc, base, c64(offset));
  Value start = arith::ShRUIOp::create(
      b, loc, arith::AndIOp::create(b, loc, addr, c64(0x3FFFF)), c64(4));
  uint64_t mode = swizzleBytes == 128  ? 1
                  : swizzleBytes == 64 ? 2
                  : swizzleBytes == 32 ? 3
                                       : 0;
  uint64_t fields =
      uint64_t(lbo >> 4) << 16 | uint64_t(sbo >> 4) << 32 | mode << 62;
  return arith::OrIOp::create(b, loc, start, c64(int64_t(fields)));
}

/// acc = sum over steps of A_s B_s on one warpgroup, as one asm statement:
/// wgmma.fence, the wgmma.mma_async chain, commit and (with `wait`) wait.
/// Accumulators are pending between mma_async and wait_group, so no
/// compiler-visible code may touch them in between: without `wait` the
/// results may only be handed to waitWarpgroup. A is a descriptor (one
/// i64) or four i32 registers per step.
SmallVector<Value>
GpuAttentionBuilder::warpgroupMma(OpBuilder &b, int64_t n, ValueRange acc,
                                  ArrayRef<SmallVector<Value>> aPerStep,
                                  ArrayRef<Value> bPerStep, bool transB,
                                  bool wait, const WgmmaForm *form) {
  int64_t nAcc = int64_t(acc.size()); // n / 2 per thread
  std::string type = isa<BFloat16Type>(elt) ? "bf16" : "f16";
  WgmmaForm half{"k16.f32." + type + "." + type};
  if (!form)
    form = &half;
  std::string text, constraints;
  llvm::raw_string_ostream asmText(text), cons(constraints);
  SmallVector<Value> operands(acc.begin(), acc.end());
  for (int64_t i = 0; i < nAcc; ++i)
    cons << (i ? "," : "") << (form->integer ? "=r" : "=f");
  for (int64_t i = 0; i < nAcc; ++i)
    cons << "," << i;
  int64_t next = 2 * nAcc;
  operands.push_back(cI32(b, 1));
  cons << ",r";
  int64_t scaleOperand = next++;
  asmText << "{\n.reg .pred p;\nsetp.ne.b32 p, $" << scaleOperand
          << ", 0;\nwgmma.fence.sync.aligned;\n";
  for (size_t step = 0; step < bPerStep.size(); ++step) {
    asmText << "wgmma.mma_async.sync.aligned.m64n" << n << form->kAndTypes
            << " {";
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
    asmText << ", $" << next++ << ", p";
    if (!form->integer)
      asmText << ", 1, 1"; // imm-scale-a, imm-scale-b
    if (!form->integer && !form->fp8) {
      if (a.size() == 1)
        asmText << ", 0"; // imm-trans-a: K-major
      asmText << ", " << (transB ? 1 : 0);
    }
    asmText << ";\n";
  }
  asmText << "wgmma.commit_group.sync.aligned;\n";
  if (wait)
    asmText << "wgmma.wait_group.sync.aligned 0;\n";
  asmText << "}";
  Type accType = form->integer ? Type(b.getI32Type()) : Type(b.getF32Type());
  auto resultType = LLVM::LLVMStructType::getLiteral(
      b.getContext(), SmallVector<Type>(nAcc, accType));
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

/// Waits until at most `groups` wgmma groups are in flight; `pending` (the
/// accumulators of the groups that must be done) pass through the asm
/// statement, so their uses cannot move above the wait.
SmallVector<Value> GpuAttentionBuilder::waitWarpgroup(OpBuilder &b,
                                                      ValueRange pending,
                                                      int64_t groups) {
  std::string constraints;
  llvm::raw_string_ostream cons(constraints);
  for (size_t i = 0; i < pending.size(); ++i)
    cons << (i ? "," : "") << "=f";
  for (size_t i = 0; i < pending.size(); ++i)
    cons << "," << i;
  auto resultType = LLVM::LLVMStructType::getLiteral(
      b.getContext(), SmallVector<Type>(pending.size(), b.getF32Type()));
  auto inlineAsm = LLVM::InlineAsmOp::create(
      b, loc, resultType, pending,
      "wgmma.wait_group.sync.aligned " + std::to_string(groups) + ";",
      constraints, /*has_side_effects=*/true, /*is_align_stack=*/false,
      LLVM::tailcallkind::TailCallKind::None,
      LLVM::AsmDialectAttr::get(b.getContext(), LLVM::AsmDialect::AD_ATT),
      ArrayAttr());
  SmallVector<Value> out;
  for (size_t i = 0; i < pending.size(); ++i)
    out.push_back(LLVM::ExtractValueOp::create(
        b, loc, inlineAsm.getRes(), ArrayRef<int64_t>{int64_t(i)}));
  return out;
}

SmallVector<Frag> GpuAttentionBuilder::fragments(ArrayRef<Value> acc) {
  SmallVector<Frag> s(acc.size() / 4);
  for (size_t nb = 0; nb < s.size(); ++nb)
    for (int i = 0; i < 4; ++i)
      s[nb][i] = acc[nb * 4 + i];
  return s;
}

/// S = Q K^T for the key tile in `buffer`, both operands through
/// descriptors, one k16 step per 16 columns of D.
SmallVector<Value> GpuAttentionBuilder::qkWgmma(OpBuilder &b, Value buffer,
                                                bool wait) {
  stage = buffer;
  SmallVector<Value> acc(BK / 2, cF32(b, 0.0));
  SmallVector<SmallVector<Value>> aSteps;
  SmallVector<Value> bSteps;
  Value kBase = stageAddress(b, kAddr, BK * D * elementBytes());
  for (int64_t kc = 0; kc < D / 16; ++kc) {
    if (tma) {
      // K-major, swizzled: step kc's 32 bytes are in atom kc * 32 / W, that
      // far into its rows. LBO is unused here; 16 bytes (1) as the ISA
      // assumes.
      int64_t w = qkSwizzle, atom = kc * 32 / w, within = kc * 32 % w;
      aSteps.push_back(
          {descriptor(b, qAddr, atom * BQ * w + within, 16, 8 * w, w)});
      bSteps.push_back(
          descriptor(b, kBase, atom * BK * w + within, 16, 8 * w, w));
      continue;
    }
    aSteps.push_back({descriptor(b, qAddr, 2 * kc * BQ * 16, BQ * 16, 128)});
    bSteps.push_back(descriptor(b, kBase, 2 * kc * BK * 16, BK * 16, 128));
  }
  return warpgroupMma(b, BK, acc, aSteps, bSteps, false, wait);
}

/// P's accumulators as the register A operand of each 16-key step of
/// O += P V, as they are (the accumulator and A layouts agree).
SmallVector<SmallVector<Value>>
GpuAttentionBuilder::pOperands(OpBuilder &b, ArrayRef<Value> p) {
  auto reg = [&](Value lo, Value hi) {
    Value pair = pack(b, lo, hi);
    return isa<VectorType>(pair.getType()) ? bitcastPair(b, pair) : pair;
  };
  SmallVector<SmallVector<Value>> a;
  for (int64_t kc = 0; kc < BK / 16; ++kc) {
    auto at = [&](int64_t nb, int i) { return p[nb * 4 + i]; };
    a.push_back({reg(at(2 * kc, 0), at(2 * kc, 1)),
                 reg(at(2 * kc, 2), at(2 * kc, 3)),
                 reg(at(2 * kc + 1, 0), at(2 * kc + 1, 1)),
                 reg(at(2 * kc + 1, 2), at(2 * kc + 1, 3))});
  }
  return a;
}

/// acc += P V for the V tile in `buffer`, read N-major from shared memory.
SmallVector<Value>
GpuAttentionBuilder::pvWgmma(OpBuilder &b, ArrayRef<SmallVector<Value>> a,
                             Value buffer, ValueRange acc, bool wait) {
  stage = buffer;
  SmallVector<Value> bSteps;
  Value vBase = stageAddress(b, vAddr, BK * Dv * elementBytes());
  for (int64_t kc = 0; kc < BK / 16; ++kc) {
    if (tma) {
      // MN-major, swizzled: keys kc * 16.. are rows of every atom; atoms
      // (W bytes of Dv each) BK W apart, 8-key groups 8 W apart.
      int64_t w = vSwizzle;
      bSteps.push_back(descriptor(b, vBase, kc * 16 * w, BK * w, 8 * w, w));
      continue;
    }
    bSteps.push_back(descriptor(b, vBase, kc * 256, 128, BK * 16));
  }
  return warpgroupMma(b, Dv, acc, a, bSteps, true, wait);
}

/// S = Q K^T on wgmma k32 with Q's int8/e4m3 codes in registers and K's
/// codes (buffer `stage`) through descriptors: K-major core matrices of
/// 8 keys x 16 bytes, as for f16/bf16 K, 32 bytes of D per step.
SmallVector<Frag> GpuAttentionBuilder::qkCodesWgmma(OpBuilder &b, Value k0) {
  Value rowScale[2];
  SmallVector<SmallVector<Value>> a = quantizedQuery(b, k0, rowScale);
  WgmmaForm form;
  if (*quant == KVQuant::int8 || *quant == KVQuant::int4) {
    form = {"k32.s32.s8.s8", true, false};
  } else {
    form = {std::string("k32.f32.e4m3.") +
                (*quant == KVQuant::fp8e4m3 ? "e4m3" : "e5m2"),
            false, true};
  }
  Value zero = form.integer ? cI32(b, 0) : cF32(b, 0.0);
  SmallVector<Value> acc(BK / 2, zero);
  SmallVector<Value> bSteps;
  Value kBase = stageAddress(b, kCodeAddr, BK * D);
  for (int64_t kc = 0; kc < D / 32; ++kc)
    bSteps.push_back(descriptor(b, kBase, 2 * kc * BK * 16, BK * 16, 128));
  SmallVector<Value> out =
      warpgroupMma(b, BK, acc, a, bSteps, false, true, &form);
  return scaledScores(b, out, rowScale);
}

} // namespace mlir::attn::nvptx::kernel
