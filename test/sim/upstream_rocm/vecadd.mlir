// Re-creates the kernel of llvm-project
//   mlir/test/Integration/GPU/ROCM/vecadd.mlir and
//   mlir/test/Integration/GPU/ROCM/gpu-lower-to-rocdl-pipeline.mlir
// (the latter's amdgpu.sched_barrier included: a scheduling no-op).
//
// Host side (AmdUpstreamTest.cpp): a = b = 1.23 (5 floats), one workgroup
// of 5 work-items; c = a + b, which the upstream tests printed as
// [2.46, 2.46, 2.46, 2.46, 2.46].
module attributes {gpu.container_module} {
  gpu.module @upstream {
    gpu.func @vecadd(%a: memref<5xf32>, %b: memref<5xf32>, %c: memref<5xf32>)
        kernel {
      %tx = gpu.thread_id x
      %x = memref.load %a[%tx] : memref<5xf32>
      %y = memref.load %b[%tx] : memref<5xf32>
      amdgpu.sched_barrier allow = <none>
      %s = arith.addf %x, %y : f32
      memref.store %s, %c[%tx] : memref<5xf32>
      gpu.return
    }
  }
}
