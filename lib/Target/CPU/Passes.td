//===- Passes.td - CPU target passes -----------------------*- tablegen -*-===//
#ifndef ATTN_TARGET_CPU_PASSES_TD
#define ATTN_TARGET_CPU_PASSES_TD

include "mlir/Pass/PassBase.td"

def AttnCPUWorkRangePass : Pass<"attn-cpu-work-range", "::mlir::func::FuncOp"> {
  let summary = "Turn the tiled work loop into a range of work items per call";
  let description = [{
    The CPU runtime splits the (b, h, query tile) items of a launch over its
    thread pool. This pass appends `work_begin, work_end: index` to the
    function, replaces the `attn.work_loop` `scf.parallel` with an `scf.for`
    over that range (delinearized into b, h and the query tile), and hoists
    the per-item stack buffers to the entry block, since one call now runs
    its items sequentially.
  }];
  let dependentDialects = ["::mlir::scf::SCFDialect",
                           "::mlir::arith::ArithDialect"];
}

def AttnCPUApproximateMathPass : Pass<"attn-cpu-approximate-math"> {
  let summary = "Polynomial approximations of exp/log/tanh for vector code";
  let description = [{
    Replaces `math.exp2`, `math.exp`, `math.log`, `math.tanh` and friends
    with MLIR's f32 polynomial approximations, so that LLVM can vectorize
    loops that use them instead of calling libm once per element.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::vector::VectorDialect"];
}

def AttnCPUVectorizeMatmulPass
    : Pass<"attn-cpu-vectorize-matmul", "::mlir::func::FuncOp"> {
  let summary = "Register-blocked vector code for the tile matmuls";
  let description = [{
    Rewrites each small static `linalg.matmul` on f32 buffers (the `Q K^T`
    and `P V` of a tile) into an outer-product micro-kernel: a block of rows
    of C lives in vector registers across the whole reduction, each step
    loads one row of B once and broadcasts one element of A per row into a
    `vector.fma`. Columns are split into chunks and rows into blocks sized
    to the register file (`vector-bits`, `registers`), so nothing spills.
    With `byte-dots` (256- or 512-bit registers), an int8 x int8 matmul in
    the dot form (decode's K codes . Q codes) accumulates 4 byte products
    per i32 lane: with `vnni` in one `vpdpbusd`, K's codes made unsigned by
    flipping their sign bit (k + 128) and 128 * sum(q) taken off each sum;
    with `maddubs` (AVX2: `vpmaddubsw` + `vpmaddwd`, whose 16-bit pair sums
    saturate) as |k| times q with k's sign, exact for q in [-127, 127] (the
    tiler's query codes). P codes (0..255) times V's int8 codes go in as
    their low 7 bits and their top bit, one `vpmaddubsw` each. With
    `bf16-dots`, fp8 codes (decode's K in place) meet f32 rows as
    `vdpbf16ps` bf16 pairs: the codes become bf16 by bit moves (value
    times 2^-bias), the rows are rounded to bf16 once per matmul times
    2^(bias/2), and the sums are scaled back. The int4 tile products
    (`linalg.generic`s marked `attn.int4_pairs`: packed K codes against the
    query codes' even and odd columns, P codes against packed V into O's
    even and odd columns) become `vpdpbusd`s on the packed bytes' nibbles
    with `byte-dots`, and otherwise unpack the tile to bytes and take the
    int8 matmul's way. A zero `linalg.fill` of C right before a P . V on
    codes is folded away: the sums are stored instead of added.
  }];
  let options = [
    Option<"vectorBits", "vector-bits", "int64_t", "512",
           "width of one vector register in bits">,
    Option<"registers", "registers", "int64_t", "32",
           "number of vector registers">,
    Option<"byteDots", "byte-dots", "std::string", "\"none\"",
           "int8 x int8 dot products: none, vnni (vpdpbusd: AVX-512 VNNI, "
           "AVX-VNNI) or maddubs (AVX2 vpmaddubsw + vpmaddwd)">,
    Option<"bf16Dots", "bf16-dots", "bool", "false",
           "fp8 codes x f32 rows as bf16 dot products (AVX-512 BF16 "
           "vdpbf16ps)">,
  ];
  let dependentDialects = ["::mlir::vector::VectorDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::LLVM::LLVMDialect"];
}

def AttnCPUConvertToLLVMPass : Pass<"attn-cpu-convert-to-llvm", "::mlir::ModuleOp"> {
  let summary = "Lower arith, cf, func, index, math, memref, ub and vector to LLVM in one conversion";
  let description = [{
    One dialect conversion (upstream `convert-to-llvm`) with the patterns of
    every dialect left after the CPU pre-lowering, instead of one conversion
    pass per dialect followed by `reconcile-unrealized-casts`: each pass walks
    the whole kernel and leaves casts for the next to fold, which made the
    per-dialect chain a large part of a cold JIT compile. The patterns and
    their options are the upstream defaults the separate passes used, so the
    result is the same LLVM dialect IR. Math ops without an LLVM intrinsic
    then become libm calls (`convert-math-to-libm`), as before.

    The dialects' ConvertToLLVM interfaces are registered by this pass, so it
    does not depend on the tool having registered all MLIR extensions, and it
    fails if any non-LLVM op is left.
  }];
  let dependentDialects = ["::mlir::LLVM::LLVMDialect",
                           "::mlir::func::FuncDialect"];
}

#endif // ATTN_TARGET_CPU_PASSES_TD
