// RUN: attn-opt %s --pass-pipeline='builtin.module(func.func(attn-classify-mask),attn-tile-backward{block-q=32 block-kv=64},func.func(canonicalize,cse))' | FileCheck %s

// The backward of a causal, soft-capped softmax with a learned bias table
// and a sink: one work loop whose bounds and body depend on the phase.
// Phase 0 walks (b, kv head, key tile): for every query head of the group
// and query tile the classifier keeps, S^T = K Q^T and dP^T = V dO^T,
// the per-entry adjoint (p = exp(u - lse), du = p (dp - delta)), then
// dV += P^T dO and dK += dS^T Q; score_grad's accumulate_grad becomes a
// read-add-write of the gradient buffers (%dcap, %dbias). Phase 1 walks
// (b, query head, query tile) over key tiles: dQ += dS K (A read
// transposed), adding nothing to %dbias (phase 0 did), then each row's
// sink-logit gradient -exp(sink - lse) delta goes to %dcap.

// CHECK-LABEL: func.func @capped(
// CHECK-SAME: %[[Q:[a-z0-9]+]]: memref<?x?x?x64xf32>, %[[K:[a-z0-9]+]]: memref<?x?x?x64xf32>, %[[V:[a-z0-9]+]]: memref<?x?x?x32xf32>, %[[O:[a-z0-9]+]]: memref<?x?x?x32xf32>, %[[LSE:[a-z0-9]+]]: memref<?x?x?xf32>, %[[CAP:[a-z0-9]+]]: f32, %[[BIAS:[a-z0-9]+]]: memref<?x?xf32>, %[[DO:[a-z0-9]+]]: memref<?x?x?x32xf32>, %[[DQ:[a-z0-9]+]]: memref<?x?x?x64xf32>, %[[DK:[a-z0-9]+]]: memref<?x?x?x64xf32>, %[[DV:[a-z0-9]+]]: memref<?x?x?x32xf32>, %[[DCAP:[a-z0-9]+]]: memref<?xf32>, %[[DBIAS:[a-z0-9]+]]: memref<?x?xf32>, %[[PHASE:[a-z0-9]+]]: i32)
// CHECK-NOT: attn.attention
// CHECK: %[[P0:.+]] = arith.cmpi eq, %[[PHASE]], %c0_i32
// CHECK: %[[HEADS:.+]] = arith.select %[[P0]]
// CHECK: %[[TILES:.+]] = arith.select %[[P0]]
// CHECK: scf.parallel ({{.*}}) = ({{.*}}) to (%{{.+}}, %[[HEADS]], %[[TILES]])
// CHECK: scf.if %[[P0]] {
//      The classifier on (h, query tile, key tile): EMPTY pairs are skipped.
// CHECK: %[[CLS:.+]] = arith.select %{{.+}}, %c0_i32, %{{.+}} : i32
// CHECK: %[[KEPT:.+]] = arith.cmpi ne, %[[CLS]], %c0_i32
// CHECK: scf.if %[[KEPT]] {
// CHECK: memref.load %[[LSE]]
// CHECK: memref.load %[[O]]
// CHECK: memref.load %[[DO]]
// CHECK: linalg.matmul ins(%[[KB:.+]], %[[QT:.+]] : memref<64x64xf32>, memref<64x32xf32>) outs(%[[ST:.+]] : memref<64x32xf32>)
// CHECK: linalg.matmul ins(%[[VB:.+]], %[[DOT:.+]] : memref<64x32xf32>, memref<32x32xf32>) outs(%[[DPT:.+]] : memref<64x32xf32>)
//      The entries' loop makes no read-add-write of a gradient (it would
//      keep the loop from vectorizing): score_grad's accumulations run in a
//      loop of their own over the entries' du, the param's into one slot
//      per query lane (%[[LANES]]), summed at the end of the work item.
// CHECK: math.exp
// CHECK-NOT: %[[DBIAS]]
// CHECK: scf.for
// CHECK: memref.load %[[DBIAS]]
// CHECK: memref.store %{{.+}}, %[[DBIAS]]
// CHECK: %[[LANE:.+]] = memref.load %[[LANES:.+]][%{{.+}}] : memref<32xf32>
// CHECK: linalg.matmul ins(%[[PT:.+]], %{{.+}} : memref<64x32xf32>, memref<32x32xf32>) outs(%[[DVACC:.+]] : memref<64x32xf32>)
// CHECK: linalg.matmul ins(%[[DST:.+]], %{{.+}} : memref<64x32xf32>, memref<32x64xf32>) outs(%[[DKACC:.+]] : memref<64x64xf32>)
// CHECK: memref.store %{{.+}}, %[[DK]]
// CHECK: memref.store %{{.+}}, %[[DV]]
// CHECK: memref.load %[[DCAP]]
// CHECK: scf.for {{.+}} iter_args
// CHECK: memref.load %[[LANES]]
// CHECK: memref.store %{{.+}}, %[[DCAP]]
// CHECK: } else {
// CHECK-NOT: %[[DBIAS]]
// CHECK: linalg.matmul indexing_maps = [#map, #map1, #map2] ins(%[[DST]], %[[KB]] : memref<64x32xf32>, memref<64x64xf32>) outs(%[[DQACC:.+]] : memref<32x64xf32>)
// CHECK: memref.store %{{.+}}, %[[DQ]]
// CHECK-NOT: %[[DBIAS]]
// CHECK: math.exp
// CHECK: arith.negf
// CHECK: memref.store %{{.+}}, %[[DCAP]]
// CHECK-NOT: %[[DBIAS]]
func.func @capped(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xf32>, %v: memref<?x?x?x32xf32>, %o: memref<?x?x?x32xf32>, %lse: memref<?x?x?xf32>, %cap: f32, %bias: memref<?x?xf32>, %do: memref<?x?x?x32xf32>, %dq: memref<?x?x?x64xf32>, %dk: memref<?x?x?x64xf32>, %dv: memref<?x?x?x32xf32>, %dcap: memref<?xf32>, %dbias: memref<?x?xf32>, %phase: i32) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x32xf32>) outs(%o : memref<?x?x?x32xf32>) lse(%lse : memref<?x?x?xf32>) params(%cap : f32) captures(%bias : memref<?x?xf32>) backward(%do, %dq, %dk, %dv : memref<?x?x?x32xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x32xf32>) phase(%phase) param_grads(%dcap : memref<?xf32>) capture_grads(%dbias : memref<?x?xf32>) normalize = softmax score {
  ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kv: i32):
    %x = arith.divf %s, %cap : f32
    %t = math.tanh %x : f32
    %c = arith.mulf %t, %cap : f32
    %bb = attn.load %bias[%h, %kv] : memref<?x?xf32>
    %r = arith.addf %c, %bb : f32
    attn.yield %r : f32
  } mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    %m = arith.cmpi sge, %qi, %kv : i32
    attn.yield %m : i1
  } sink {
  ^bb0(%h: i32):
    %f = arith.sitofp %h : i32 to f32
    %s = arith.mulf %f, %cap : f32
    attn.yield %s : f32
  }
  return
}
