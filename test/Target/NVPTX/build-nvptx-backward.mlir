// RUN: attn-opt %s --pass-pipeline='builtin.module(func.func(attn-classify-mask),attn-build-nvptx-kernel{chip=sm_80 func=causal},attn-build-nvptx-backward{chip=sm_80})' | FileCheck %s
// RUN: attn-opt %s --pass-pipeline='builtin.module(func.func(attn-classify-mask),attn-build-nvptx-kernel{chip=sm_80 func=causal},attn-build-nvptx-backward{chip=sm_80 scalar=true})' | FileCheck %s --check-prefix=SCALAR

// The backward of a causal softmax (the function attnc imports beside the
// forward with --backward): attn-build-nvptx-backward differentiates it
// and adds <entry>_bwd_kv (dK, dV per key tile) and <entry>_bwd_q (dQ per
// query tile) to the gpu.module attn-build-nvptx-kernel made, and their
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

// CHECK-LABEL: gpu.module @attn_gpu attributes {attn.launch = {backward_gradients = true, backward_kv = "causal_bwd_kv", backward_kv_rows = 64 : i64, backward_kv_threads = 128 : i64, backward_q = "causal_bwd_q", backward_q_rows = 64 : i64, backward_q_threads = 128 : i64, block_kv = 64 : i64, block_threads = 128 : i64, entry = "causal"
// CHECK: gpu.func @causal(
// CHECK: gpu.func @causal_merge(
//      dK, dV on tensor cores: S^T and dP^T by mma.sync, P = exp(S - lse).
// CHECK: gpu.func @causal_bwd_kv(
// CHECK: nvvm.mma.sync
// CHECK: math.exp
// CHECK: nvvm.mma.sync
// CHECK: gpu.func @causal_bwd_q(
// CHECK: nvvm.mma.sync
// CHECK: math.exp

// scalar=true: the same kernels of scalar FMAs (no mma.sync).
// SCALAR: gpu.func @causal_bwd_kv(
// SCALAR-NOT: nvvm.mma.sync
// SCALAR: gpu.func @causal_bwd_q(
// SCALAR-NOT: nvvm.mma.sync
