// RUN: attn-opt %s --pass-pipeline='builtin.module(func.func(attn-classify-mask),attn-build-amdgpu-kernel{chip=gfx942 func=causal},attn-build-amdgpu-backward{chip=gfx942})' | FileCheck %s

// The backward of a causal softmax on CDNA: attn-build-amdgpu-backward
// adds the shared SIMT kernels (one work-item per key or query row),
// <entry>_bwd_kv and <entry>_bwd_q, to the forward's gpu.module and their
// geometry to its attn.launch.

!t = memref<?x?x?x64xbf16, strided<[?, ?, ?, 1], offset: ?>>
!l = memref<?x?x?xf32, strided<[?, ?, 1], offset: ?>>
func.func @causal(%q: !t, %k: !t, %v: !t, %o: !t, %lse: !l, %classes: memref<?x?x?x?xi8>, %splits: i32, %o_part: memref<?x?x?x?x?xf32>, %lse_part: memref<?x?x?x?xf32>) {
  attn.attention ins(%q, %k, %v : !t, !t, !t) outs(%o : !t) lse(%lse : !l) tile_classes(%classes : memref<?x?x?x?xi8>) splits(%splits) partials(%o_part, %lse_part : memref<?x?x?x?x?xf32>, memref<?x?x?x?xf32>) normalize = softmax scale = 1.250000e-01 mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    %0 = arith.cmpi sle, %kv, %qi : i32
    attn.yield %0 : i1
  }
  return
}
func.func @causal__backward(%q: !t, %k: !t, %v: !t, %o: !t, %lse: !l, %do: !t, %dq: !t, %dk: !t, %dv: !t, %phase: i32) {
  attn.attention ins(%q, %k, %v : !t, !t, !t) outs(%o : !t) lse(%lse : !l) backward(%do, %dq, %dk, %dv : !t, !t, !t, !t) phase(%phase) normalize = softmax scale = 1.250000e-01 mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    %0 = arith.cmpi sle, %kv, %qi : i32
    attn.yield %0 : i1
  }
  return
}

// CHECK-LABEL: gpu.module @attn_gpu attributes {attn.launch = {backward_gradients = true, backward_kv = "causal_bwd_kv", backward_kv_rows = 64 : i64, backward_kv_threads = 64 : i64, backward_q = "causal_bwd_q", backward_q_rows = 64 : i64, backward_q_threads = 64 : i64, block_kv = 32 : i64, block_threads = 256 : i64, entry = "causal"
// CHECK: gpu.func @causal(
// CHECK: amdgpu.mfma
// CHECK: gpu.func @causal_merge(
// CHECK: gpu.func @causal_bwd_kv(
// CHECK-NOT: amdgpu.mfma
// CHECK: math.exp
// CHECK: gpu.func @causal_bwd_q(
// CHECK-NOT: amdgpu.mfma
// CHECK: math.exp
