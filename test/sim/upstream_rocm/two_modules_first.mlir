// Re-creates the first of the two kernels of llvm-project
//   mlir/test/Integration/GPU/ROCM/two-modules.mlir
// (each gpu.launch there is outlined into a module of its own; the two run
// one after the other on the same buffer).
//
// Host side (AmdUpstreamTest.cpp): 13 int32, one workgroup of 13
// work-items, both modules launched; the upstream test printed
// [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12].
module attributes {gpu.container_module} {
  gpu.module @upstream_first {
    gpu.func @store_tid_first(%dst: memref<?xi32>) kernel {
      %tx = gpu.thread_id x
      %t = arith.index_cast %tx : index to i32
      memref.store %t, %dst[%tx] : memref<?xi32>
      gpu.return
    }
  }
}
