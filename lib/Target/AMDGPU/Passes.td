//===- Passes.td - AMDGPU target passes --------------------*- tablegen -*-===//
#ifndef ATTN_TARGET_AMDGPU_PASSES_TD
#define ATTN_TARGET_AMDGPU_PASSES_TD

include "mlir/Pass/PassBase.td"

defvar AMDGPUKernelDialects = ["::mlir::gpu::GPUDialect",
                               "::mlir::amdgpu::AMDGPUDialect",
                               "::mlir::ROCDL::ROCDLDialect",
                               "::mlir::LLVM::LLVMDialect",
                               "::mlir::vector::VectorDialect",
                               "::mlir::scf::SCFDialect",
                               "::mlir::math::MathDialect",
                               "::mlir::memref::MemRefDialect",
                               "::mlir::arith::ArithDialect"];

def AttnBuildAMDGPUKernelPass
    : Pass<"attn-build-amdgpu-kernel", "::mlir::ModuleOp"> {
  let summary = "Build the AMD CDNA kernels of a classified attn.attention";
  let description = [{
    Adds `gpu.module @attn_gpu` to the module, holding the attention kernel
    of the forward `attn.attention` in `func` (classified by
    attn-classify-mask): four waves of 16 query rows on MFMA, K and V^T
    tiles in LDS; the split-KV merge kernel `<kernel>_merge`; and with
    select, the pre-pass kernels that pool and select blocks. The launch
    geometry is recorded as the gpu.module's `attn.launch` dictionary, which
    attnc reads for the bundle. Fails on what the kernels do not support.
  }];
  let options = [
    Option<"chip", "chip", "std::string", "\"gfx942\"",
           "gfx90a, gfx942 or gfx950">,
    Option<"blockKV", "block-kv", "int64_t", "32",
           "keys per tile (a multiple of 16)">,
    Option<"func", "func", "std::string", "\"\"",
           "the function holding the attn.attention (default: the only "
           "one)">,
    Option<"kernel", "kernel", "std::string", "\"\"",
           "the kernel's name (default: the function's)">
  ];
  let dependentDialects = AMDGPUKernelDialects;
}

def AttnBuildAMDGPUBackwardPass
    : Pass<"attn-build-amdgpu-backward", "::mlir::ModuleOp"> {
  let summary = "Add the AMD backward kernels of a classified backward "
                "attn.attention";
  let description = [{
    Differentiates the backward `attn.attention` in `func` and adds the
    shared SIMT backward kernels (one work-item per key or query row) to
    the gpu.module attn-build-amdgpu-kernel made: `<entry>_bwd_kv` and
    `<entry>_bwd_q`, where `entry` is the forward kernel `attn.launch`
    names. Their names, threads and rows per block join `attn.launch`.
  }];
  let options = [
    Option<"chip", "chip", "std::string", "\"gfx942\"",
           "gfx90a, gfx942 or gfx950">,
    Option<"func", "func", "std::string", "\"\"",
           "the function holding the backward attn.attention (default: "
           "the only one)">
  ];
  let dependentDialects = AMDGPUKernelDialects;
}

#endif // ATTN_TARGET_AMDGPU_PASSES_TD
