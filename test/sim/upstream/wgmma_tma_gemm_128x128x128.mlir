// Re-creates the kernel of llvm-project
//   mlir/test/Integration/GPU/CUDA/sm90/gemm_f32_f16_f16_128x128x128.mlir
//
// One warpgroup computes D[128][128] (f32) = A[128][0:128] * B[0:128][128]
// (f16) in two K steps of 64, both staged up front by TMA.
//
// Covers: TMA with 128B swizzle into dynamic shared memory
// (cp.async.bulk.tensor.2d ... mbarrier::complete_tx::bytes, three boxes a
// stage), prefetch.tensormap, two mbarriers (one a stage) each with one
// expected arrival (mbarrier.arrive.expect_tx) and waited on phase 0 by all
// 128 threads (mbarrier.try_wait.parity), wgmma.fence,
// wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 with both operands
// described in shared memory (128B-swizzled matrix descriptors, B
// transposed: N-contiguous), wgmma.commit_group and wgmma.wait_group, the
// accumulator fragments stored to shared memory and copied out as float4.
//
// Host side: A[r][c] = ((64r + c) / 8) % 16, B[r][c] = ((128r + c) / 8) % 16
// (f16, 128x128 each; D only reads A's first 128 columns, which is all of
// them); boxes A [128, 64], B [64, 64], 128B swizzle; one CTA of 128
// threads, 65536 bytes of dynamic shared memory. Upstream compared every
// element with a host matmul and printed 16384 correct, 0 incorrect
// (tolerance 1e-8); so does UpstreamTest.cpp.
#smem = #gpu.address_space<workgroup>
!mapA = !nvgpu.tensormap.descriptor<tensor = memref<128x64xf16, #smem>,
    swizzle = swizzle_128b, l2promo = none, oob = zero, interleave = none>
!mapB = !nvgpu.tensormap.descriptor<tensor = memref<64x64xf16, #smem>,
    swizzle = swizzle_128b, l2promo = none, oob = zero, interleave = none>
!stageBarriers = !nvgpu.mbarrier.group<memorySpace = #smem, num_barriers = 2>
!accumulator = !nvgpu.warpgroup.accumulator<fragmented = vector<128x128xf32>>
!descA = !nvgpu.warpgroup.descriptor<tensor = memref<128x64xf16, #smem>>
!descB = !nvgpu.warpgroup.descriptor<tensor = memref<64x128xf16, #smem>>

module attributes {gpu.container_module} {
  gpu.module @upstream {
    // The tensor maps arrive as the device addresses of their 128 bytes.
    gpu.func @wgmma_gemm(%mapAPtr: !llvm.ptr, %mapBPtr: !llvm.ptr,
                         %d: memref<128x128xf32>) kernel {
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c2 = arith.constant 2 : index
      %c4 = arith.constant 4 : index
      %c32 = arith.constant 32 : index
      %c64 = arith.constant 64 : index
      %c128 = arith.constant 128 : index
      %aBytes = arith.constant 16384 : index  // one stage of A, and of B
      %bOffset = arith.constant 32768 : index // B's stages follow A's
      %halfB = arith.constant 8192 : index    // one 64x64 box
      %stageBytes = arith.constant 32768 : index
      %ticks = arith.constant 10000000 : index
      %phase0 = arith.constant false
      %mapA = builtin.unrealized_conversion_cast %mapAPtr : !llvm.ptr to !mapA
      %mapB = builtin.unrealized_conversion_cast %mapBPtr : !llvm.ptr to !mapB
      %tid = gpu.thread_id x
      %leader = arith.cmpi eq, %tid, %c0 : index
      %dyn = gpu.dynamic_shared_memory : memref<?xi8, #smem>

      %full = nvgpu.mbarrier.create -> !stageBarriers
      nvgpu.mbarrier.init %full[%c0], %c1, predicate = %leader : !stageBarriers
      nvgpu.mbarrier.init %full[%c1], %c1, predicate = %leader : !stageBarriers
      nvgpu.tma.prefetch.descriptor %mapA, predicate = %leader : !mapA
      nvgpu.tma.prefetch.descriptor %mapB, predicate = %leader : !mapB
      gpu.barrier

      // Stage s holds A[:, 64s:64s+64] at 16384 s and B[64s:64s+64, :] at
      // 32768 + 16384 s (its columns 0-63, then 64-127).
      scf.if %leader {
        scf.for %s = %c0 to %c2 step %c1 {
          %k = arith.muli %s, %c64 : index
          %aAt = arith.muli %s, %aBytes : index
          %bAt = arith.addi %aAt, %bOffset : index
          %bAt2 = arith.addi %bAt, %halfB : index
          %aTile = memref.view %dyn[%aAt][] : memref<?xi8, #smem> to memref<128x64xf16, #smem>
          %bLeft = memref.view %dyn[%bAt][] : memref<?xi8, #smem> to memref<64x64xf16, #smem>
          %bRight = memref.view %dyn[%bAt2][] : memref<?xi8, #smem> to memref<64x64xf16, #smem>
          nvgpu.mbarrier.arrive.expect_tx %full[%s], %stageBytes : !stageBarriers
          nvgpu.tma.async.load %mapA[%k, %c0], %full[%s] to %aTile
              : !mapA, !stageBarriers -> memref<128x64xf16, #smem>
          nvgpu.tma.async.load %mapB[%c0, %k], %full[%s] to %bLeft
              : !mapB, !stageBarriers -> memref<64x64xf16, #smem>
          nvgpu.tma.async.load %mapB[%c64, %k], %full[%s] to %bRight
              : !mapB, !stageBarriers -> memref<64x64xf16, #smem>
        }
      }

      %zero = nvgpu.warpgroup.mma.init.accumulator -> !accumulator
      %sum = scf.for %s = %c0 to %c2 step %c1 iter_args(%acc = %zero) -> (!accumulator) {
        nvgpu.mbarrier.try_wait.parity %full[%s], %phase0, %ticks : !stageBarriers
        %aAt = arith.muli %s, %aBytes : index
        %bAt = arith.addi %aAt, %bOffset : index
        %aTile = memref.view %dyn[%aAt][] : memref<?xi8, #smem> to memref<128x64xf16, #smem>
        %bTile = memref.view %dyn[%bAt][] : memref<?xi8, #smem> to memref<64x128xf16, #smem>
        %da = nvgpu.warpgroup.generate.descriptor %aTile, %mapA
            : memref<128x64xf16, #smem>, !mapA -> !descA
        %db = nvgpu.warpgroup.generate.descriptor %bTile, %mapB
            : memref<64x128xf16, #smem>, !mapB -> !descB
        %next = nvgpu.warpgroup.mma %da, %db, %acc {transposeB}
            : !descA, !descB, !accumulator -> !accumulator
        scf.yield %next : !accumulator
      }
      nvvm.wgmma.wait.group.sync.aligned 0

      // Every wgmma has read its operands; D reuses the staging memory.
      gpu.barrier
      %dTile = memref.view %dyn[%c0][] : memref<?xi8, #smem> to memref<128x128xf32, #smem>
      nvgpu.warpgroup.mma.store %sum, %dTile : !accumulator to memref<128x128xf32, #smem>
      gpu.barrier

      // Warp w copies rows w, w + 4, ...; a lane four columns.
      %warp = arith.divui %tid, %c32 : index
      %lane = arith.remui %tid, %c32 : index
      %col = arith.muli %lane, %c4 : index
      scf.for %row = %warp to %c128 step %c4 {
        %v = vector.load %dTile[%row, %col] : memref<128x128xf32, #smem>, vector<4xf32>
        vector.store %v, %d[%row, %col] : memref<128x128xf32>, vector<4xf32>
      }
      gpu.return
    }
  }
}
