// RUN: attn-opt %s -split-input-file --pass-pipeline='builtin.module(func.func(attn-tile))' | FileCheck %s

// The row math of lib/Transforms/RowState.h as attn-tile emits it, per
// normalizer: the initial state, a key tile's step and the epilogue.

// Softmax with a sink in a split-KV launch: m starts at sink * log2(e) and
// l at 1 in part 0 only (-inf and 0 elsewhere); each tile exponentiates
// against the new max, or 0 while it is -inf, and rescales l by alpha =
// exp2(m_old - m_use); the epilogue gives o = acc / l (0 for l = 0) and
// lse = (m + log2 l) ln 2 (-inf for l = 0).

// CHECK-LABEL: func.func @softmax_sink(
// CHECK: %[[SINK:.+]] = arith.constant 5.000000e-01 : f32
// CHECK: %[[M0:.+]] = arith.mulf %[[SINK]], %{{.+}} : f32
// CHECK: %[[FIRST:.+]] = arith.cmpi eq, %{{.+}}, %c0
// CHECK: %[[MINIT:.+]] = arith.select %[[FIRST]], %[[M0]], %{{.+}} : f32
// CHECK: %[[LINIT:.+]] = arith.select %[[FIRST]], %{{.+}}, %{{.+}} : f32
// CHECK: memref.store %[[MINIT]]
// CHECK: memref.store %[[LINIT]]
//      A tile's step (per row, after the row max).
// CHECK: %[[NONE:.+]] = arith.cmpf oeq, %[[MNEW:[0-9a-z_]+]], %{{.+}} : f32
// CHECK-NEXT: arith.constant 0.000000e+00 : f32
// CHECK-NEXT: %[[MUSE:.+]] = arith.select %[[NONE]], %{{.+}}, %[[MNEW]] : f32
// CHECK-NEXT: %[[D:.+]] = arith.subf %{{.+}}, %[[MUSE]] : f32
// CHECK-NEXT: %[[ALPHA:.+]] = math.exp2 %[[D]] : f32
// CHECK-NEXT: arith.mulf %{{.+}}, %[[ALPHA]] : f32
// CHECK: %[[T:.+]] = arith.subf %{{.+}}, %{{.+}} : f32
// CHECK-NEXT: %[[P:.+]] = math.exp2 %[[T]] : f32
// CHECK: arith.addf %{{.+}}, %[[P]] fastmath<reassoc,contract> : f32
//      The epilogue (here a part's; the whole row's is the same).
// CHECK: %[[EMPTY:.+]] = arith.cmpf oeq, %[[LF:[0-9a-z_]+]], %{{.+}} : f32
// CHECK-NEXT: arith.constant 1.000000e+00 : f32
// CHECK-NEXT: %[[R:.+]] = arith.divf %{{.+}}, %[[LF]] : f32
// CHECK-NEXT: arith.constant 0.000000e+00 : f32
// CHECK-NEXT: %[[INV:.+]] = arith.select %[[EMPTY]], %{{.+}}, %[[R]] : f32
// CHECK: arith.mulf %{{.+}}, %[[INV]] : f32
// CHECK: %[[MF:.+]] = memref.load
// CHECK-NEXT: %[[LOG:.+]] = math.log2 %[[LF]] : f32
// CHECK-NEXT: %[[SUM:.+]] = arith.addf %[[MF]], %[[LOG]] : f32
// CHECK-NEXT: %[[LN2:.+]] = arith.constant 0.693147182 : f32
// CHECK-NEXT: %[[LSE:.+]] = arith.mulf %[[SUM]], %[[LN2]] : f32
// CHECK-NEXT: %[[NEGINF:.+]] = arith.constant 0xFF800000 : f32
// CHECK-NEXT: arith.select %[[EMPTY]], %[[NEGINF]], %[[LSE]] : f32
func.func @softmax_sink(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xf32>,
                        %v: memref<?x?x?x64xf32>, %o: memref<?x?x?x64xf32>,
                        %lse: memref<?x?x?xf32>, %n: i32,
                        %op: memref<?x?x?x?x?xf32>, %lp: memref<?x?x?x?xf32>) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%o : memref<?x?x?x64xf32>) lse(%lse : memref<?x?x?xf32>)
      splits(%n) partials(%op, %lp : memref<?x?x?x?x?xf32>, memref<?x?x?x?xf32>)
      normalize = softmax sink {
  ^bb0(%h: i32):
    %c = arith.constant 0.5 : f32
    attn.yield %c : f32
  }
  return
}

// -----

// Softplus: a row sum and no running max. p = softplus(t), 0 where masked,
// joins l directly (no exp2, no alpha); lse = log l, -inf for l = 0.

// CHECK-LABEL: func.func @softplus(
// CHECK-NOT: math.exp2
// CHECK: %[[E:.+]] = math.exp
// CHECK: %[[SP:.+]] = arith.addf %{{.+}}, %{{.+}} : f32
// CHECK: %[[P:.+]] = arith.select %{{.+}}, %[[SP]], %{{.+}} : f32
// CHECK: arith.addf %{{.+}}, %[[P]] fastmath<reassoc,contract> : f32
// CHECK-NOT: math.exp2
// CHECK: %[[EMPTY:.+]] = arith.cmpf oeq, %[[LF:[0-9a-z_]+]], %{{.+}} : f32
// CHECK: arith.divf %{{.+}}, %[[LF]] : f32
// CHECK-NOT: math.log2
// CHECK: %[[LOG:.+]] = math.log %[[LF]] : f32
// CHECK: arith.select %[[EMPTY]], %{{.+}}, %[[LOG]] : f32
func.func @softplus(%q: memref<?x?x?x64xf32>, %o: memref<?x?x?x64xf32>,
                    %lse: memref<?x?x?xf32>) {
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%o : memref<?x?x?x64xf32>) lse(%lse : memref<?x?x?xf32>)
      normalize = softplus scale = 0.125
  return
}

// -----

// relu: neither a max nor a sum: p = max(t, 0), 0 where masked, and the
// epilogue stores acc as it is (no division, no lse).

// CHECK-LABEL: func.func @relu(
// CHECK-NOT: math.exp2
// CHECK: %[[R:.+]] = arith.maximumf %{{.+}}, %{{.+}} : f32
// CHECK: arith.select %{{.+}}, %[[R]], %{{.+}} : f32
// CHECK-NOT: arith.divf
// CHECK-NOT: math.log
// CHECK: } {attn.work_loop}
func.func @relu(%q: memref<?x?x?x64xf32>, %o: memref<?x?x?x64xf32>) {
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%o : memref<?x?x?x64xf32>) normalize = relu scale = 0.125
  return
}

// -----

// laplace (Mega's normal CDF): pointwise like relu, p = 0.5 + 0.5 erf(z)
// with z = (t - sqrt(1/2)) sqrt(2 pi), 0 where masked; no max, sum or lse.

// CHECK-LABEL: func.func @laplace(
// CHECK-NOT: math.exp2
// CHECK: %[[MU:.+]] = arith.constant 0.707106769 : f32
// CHECK-NEXT: %[[C:.+]] = arith.subf %{{.+}}, %[[MU]] : f32
// CHECK-NEXT: %[[SCALE:.+]] = arith.constant 2.50662827 : f32
// CHECK-NEXT: %[[Z:.+]] = arith.mulf %[[C]], %[[SCALE]] : f32
// CHECK-NEXT: %[[HALF:.+]] = arith.constant 5.000000e-01 : f32
// CHECK-NEXT: %[[ERF:.+]] = math.erf %[[Z]] : f32
// CHECK-NEXT: %[[P:.+]] = math.fma %[[HALF]], %[[ERF]], %[[HALF]] : f32
// CHECK: arith.select %{{.+}}, %[[P]], %{{.+}} : f32
// CHECK-NOT: arith.divf
// CHECK-NOT: math.log
// CHECK: } {attn.work_loop}
func.func @laplace(%q: memref<?x?x?x64xf32>, %o: memref<?x?x?x64xf32>) {
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%o : memref<?x?x?x64xf32>) normalize = laplace scale = 0.125
  return
}
