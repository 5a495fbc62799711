//===- Passes.td - NVIDIA target passes --------------------*- tablegen -*-===//
#ifndef ATTN_TARGET_NVPTX_PASSES_TD
#define ATTN_TARGET_NVPTX_PASSES_TD

include "mlir/Pass/PassBase.td"

defvar NVPTXKernelDialects = ["::mlir::gpu::GPUDialect",
                              "::mlir::NVVM::NVVMDialect",
                              "::mlir::nvgpu::NVGPUDialect",
                              "::mlir::LLVM::LLVMDialect",
                              "::mlir::vector::VectorDialect",
                              "::mlir::scf::SCFDialect",
                              "::mlir::math::MathDialect",
                              "::mlir::memref::MemRefDialect",
                              "::mlir::arith::ArithDialect"];

def AttnBuildNVPTXKernelPass
    : Pass<"attn-build-nvptx-kernel", "::mlir::ModuleOp"> {
  let summary = "Build the NVIDIA kernels of a classified attn.attention";
  let description = [{
    Adds `gpu.module @attn_gpu` to the module, holding the attention kernel
    of the forward `attn.attention` in `func` (classified by
    attn-classify-mask): mma.sync tiles on sm_80, wgmma warpgroups fed by
    TMA or cp.async on sm_90a; the split-KV merge kernel `<kernel>_merge`;
    and with select, the pre-pass kernels that pool and select blocks. The
    launch geometry (threads, query rows and dynamic shared memory per
    block, key tile, tensor maps, the other kernels' names) is recorded as
    the gpu.module's `attn.launch` dictionary, which attnc reads for the
    bundle. Fails on what the kernels do not support (f32 inputs, head
    dims that are not multiples of 16).
  }];
  let options = [
    Option<"chip", "chip", "std::string", "\"sm_80\"",
           "sm_80 (mma.sync) or sm_90a (wgmma)">,
    Option<"blockQ", "block-q", "int64_t", "64",
           "query rows per block: 64, or on sm_90a 128 (two warpgroups)">,
    Option<"blockKV", "block-kv", "int64_t", "64", "keys per tile">,
    Option<"tma", "tma", "bool", "true",
           "sm_90a: K/V tiles by TMA from a producer warp (where K/V are "
           "contiguous and unquantized) instead of cp.async">,
    Option<"shareRegisters", "share-registers", "bool", "true",
           "sm_90a TMA with 128 query rows: setmaxnreg moves registers "
           "from the producer to the consumers">,
    Option<"func", "func", "std::string", "\"\"",
           "the function holding the attn.attention (default: the only "
           "one)">,
    Option<"kernel", "kernel", "std::string", "\"\"",
           "the kernel's name (default: the function's)">
  ];
  let dependentDialects = NVPTXKernelDialects;
}

def AttnBuildNVPTXBackwardPass
    : Pass<"attn-build-nvptx-backward", "::mlir::ModuleOp"> {
  let summary = "Add the NVIDIA backward kernels of a classified backward "
                "attn.attention";
  let description = [{
    Differentiates the backward `attn.attention` in `func` and adds its
    kernels to the gpu.module attn-build-nvptx-kernel made:
    `<entry>_bwd_kv` (dK, dV per key tile) and `<entry>_bwd_q` (dQ per
    query tile), where `entry` is the forward kernel `attn.launch` names,
    on tensor cores or, with scalar, on scalar FMAs. Their names, threads
    and rows per block join the `attn.launch` dictionary.
  }];
  let options = [
    Option<"chip", "chip", "std::string", "\"sm_80\"", "sm_80 or sm_90a">,
    Option<"scalar", "scalar", "bool", "false",
           "scalar FMAs instead of tensor cores (for what would spill)">,
    Option<"func", "func", "std::string", "\"\"",
           "the function holding the backward attn.attention (default: "
           "the only one)">
  ];
  let dependentDialects = NVPTXKernelDialects;
}

#endif // ATTN_TARGET_NVPTX_PASSES_TD
