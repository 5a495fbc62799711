// Re-creates the kernel of llvm-project
//   mlir/test/Integration/GPU/ROCM/gpu-to-hsaco.mlir
// (@other_func: a scalar kernel argument stored by every work-item).
//
// Host side (AmdUpstreamTest.cpp): a 5-float buffer, value 1.0, one
// workgroup of 5 work-items (the memref's size); the upstream test printed
// [1, 1, 1, 1, 1].
module attributes {gpu.container_module} {
  gpu.module @upstream {
    gpu.func @other_func(%value: f32, %out: memref<?xf32>) kernel {
      %tx = gpu.thread_id x
      memref.store %value, %out[%tx] : memref<?xf32>
      gpu.return
    }
  }
}
