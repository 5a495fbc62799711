// RUN: attn-opt %s -split-input-file --pass-pipeline='builtin.module(func.func(attn-tile))' | FileCheck %s

// Split-KV: the third parallel index enumerates (row tile, part); each part
// walks its own range of key tiles, a sink joins part 0 only, and with more
// than one part the epilogue writes unnormalized-by-merge partial results
// (o / l and lse per part) instead of o.

// CHECK-LABEL: func.func @split(
// CHECK-SAME: %[[NS:[a-z0-9]+]]: i32, %[[OP:[a-z0-9]+]]: memref<?x?x?x?x?xf32>, %[[LP:[a-z0-9]+]]: memref<?x?x?x?xf32>
// CHECK: %[[NSI:.+]] = arith.index_cast %[[NS]] : i32 to index
// CHECK: %[[PARTS:.+]] = arith.maxui %[[NSI]], %c1
// CHECK: %[[ITEMS:.+]] = arith.muli %{{.+}}, %[[PARTS]] : index
// CHECK: scf.parallel ({{.*}}) to ({{.*}}, %[[ITEMS]])
// CHECK: %[[NKT:.+]] = arith.ceildivui %{{.+}}, %c64
// CHECK: %[[PART:.+]] = arith.remui %{{.+}}, %[[PARTS]]
// CHECK: %[[PER:.+]] = arith.ceildivui %[[NKT]], %[[PARTS]]
// CHECK: %[[LO0:.+]] = arith.muli %[[PART]], %[[PER]]
// CHECK: %[[LO:.+]] = arith.minui %[[LO0]], %[[NKT]]
// CHECK: %[[HI0:.+]] = arith.addi %[[LO]], %[[PER]]
// CHECK: %[[HI:.+]] = arith.minui %[[HI0]], %[[NKT]]
//      The sink seeds the running max and sum of part 0 only.
// CHECK: %[[FIRST:.+]] = arith.cmpi eq, %[[PART]], %c0
// CHECK: arith.select %[[FIRST]]
// CHECK: scf.for %{{.+}} = %[[LO]] to %[[HI]] step %c1
// CHECK: %[[SEVERAL:.+]] = arith.cmpi ugt, %[[PARTS]], %c1
// CHECK: scf.if %[[SEVERAL]]
// CHECK: memref.store %{{.+}}, %[[OP]][%[[PART]],
// CHECK: memref.store %{{.+}}, %[[LP]][%[[PART]],
// CHECK: } else {
// CHECK: memref.store
// CHECK: } {attn.work_loop}
func.func @split(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xf32>,
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

// The merge: per (b, h, q) row, m = max_i lse_i, w_i = exp(lse_i - m),
// o = sum_i w_i o_i / sum_i w_i and lse = m + log(sum_i w_i).

// CHECK-LABEL: func.func @merge(
// CHECK-SAME: %[[OP:[a-z0-9]+]]: memref<?x?x?x?x?xf32>, %[[LP:[a-z0-9]+]]: memref<?x?x?x?xf32>, %[[O:[a-z0-9]+]]: memref<?x?x?x32xbf16>, %[[LSE:[a-z0-9]+]]: memref<?x?x?xf32>
// CHECK: %[[PARTS:.+]] = memref.dim %[[OP]], %c0
// CHECK: scf.parallel
// CHECK: %[[M:.+]] = scf.for %{{.+}} = %c0{{.*}} to %[[PARTS]]
// CHECK: arith.maximumf
// CHECK: %[[SUM:.+]] = scf.for %{{.+}} = %c0{{.*}} to %[[PARTS]]
// CHECK: math.exp
// CHECK: math.log %[[SUM]]
// CHECK: scf.for %{{.+}} = %c0{{.*}} to %c32
// CHECK: memref.load %[[OP]]
// CHECK: arith.truncf %{{.+}} : f32 to bf16
// CHECK: memref.store %{{.+}}, %[[O]]
// CHECK: memref.store %{{.+}}, %[[LSE]]
// CHECK: } {attn.work_loop}
func.func @merge(%op: memref<?x?x?x?x?xf32>, %lp: memref<?x?x?x?xf32>,
                 %o: memref<?x?x?x32xbf16>, %lse: memref<?x?x?xf32>) {
  attn.merge_splits ins(%op, %lp : memref<?x?x?x?x?xf32>, memref<?x?x?x?xf32>)
      outs(%o : memref<?x?x?x32xbf16>) lse(%lse : memref<?x?x?xf32>) normalize = softmax
  return
}
