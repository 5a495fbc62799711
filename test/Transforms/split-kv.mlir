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

// The merge (lib/Transforms/MergeSplits.h): per (b, h, q) row m = max_i
// lse_i; per column one pass over the parts sums w_i = exp(lse_i - m') and
// w_i o_i (m' = m, or 0 when every part kept nothing: lse_i = -inf), then
// o = sum w_i o_i / sum w_i, 0 for such rows, and at column 0 lse = m +
// log(sum w_i), -inf for such rows.

// CHECK-LABEL: func.func @merge(
// CHECK-SAME: %[[OP:[a-z0-9]+]]: memref<?x?x?x?x?xf32>, %[[LP:[a-z0-9]+]]: memref<?x?x?x?xf32>, %[[O:[a-z0-9]+]]: memref<?x?x?x32xbf16>, %[[LSE:[a-z0-9]+]]: memref<?x?x?xf32>
// CHECK: %[[PARTS:.+]] = memref.dim %[[OP]], %c0
// CHECK: scf.parallel (%[[B:.+]], %[[H:.+]], %[[Q:.+]]) =
// CHECK: %[[M:.+]] = scf.for %{{.+}} = %c0{{.*}} to %[[PARTS]]
// CHECK: arith.maximumf
// CHECK: %[[NONE:.+]] = arith.cmpf oeq, %[[M]], %[[NEGINF:[a-z0-9_]+]]
// CHECK: %[[SHIFT:.+]] = arith.select %[[NONE]], %{{.+}}, %[[M]]
// CHECK: scf.for %[[D:.+]] = %c0{{.*}} to %c32
// CHECK: %[[SUMS:.+]]:2 = scf.for %[[P:.+]] = %c0{{.*}} to %[[PARTS]]
// CHECK: %[[L:.+]] = memref.load %[[LP]][%[[P]], %[[B]], %[[H]], %[[Q]]]
// CHECK: %[[X:.+]] = arith.subf %[[L]], %[[SHIFT]]
// CHECK: %[[W:.+]] = math.exp %[[X]]
// CHECK: %[[OI:.+]] = memref.load %[[OP]][%[[P]], %[[B]], %[[H]], %[[Q]], %[[D]]]
// CHECK: arith.mulf %[[W]], %[[OI]]
// CHECK: %[[DIV:.+]] = arith.divf %[[SUMS]]#1, %[[SUMS]]#0
// CHECK: %[[RES:.+]] = arith.select %[[NONE]], %{{.+}}, %[[DIV]]
// CHECK: %[[LOG:.+]] = math.log %[[SUMS]]#0
// CHECK: %[[ROWLSE:.+]] = arith.addf %[[M]], %[[LOG]]
// CHECK: %[[LSEV:.+]] = arith.select %[[NONE]], %{{.+}}, %[[ROWLSE]]
// CHECK: %[[T:.+]] = arith.truncf %[[RES]] : f32 to bf16
// CHECK: memref.store %[[T]], %[[O]][%[[B]], %[[H]], %[[Q]], %[[D]]]
// CHECK: %[[FIRST:.+]] = arith.cmpi eq, %[[D]], %c0
// CHECK: scf.if %[[FIRST]]
// CHECK: memref.store %[[LSEV]], %[[LSE]][%[[B]], %[[H]], %[[Q]]]
// CHECK: } {attn.work_loop}
func.func @merge(%op: memref<?x?x?x?x?xf32>, %lp: memref<?x?x?x?xf32>,
                 %o: memref<?x?x?x32xbf16>, %lse: memref<?x?x?xf32>) {
  attn.merge_splits ins(%op, %lp : memref<?x?x?x?x?xf32>, memref<?x?x?x?xf32>)
      outs(%o : memref<?x?x?x32xbf16>) lse(%lse : memref<?x?x?xf32>) normalize = softmax
  return
}

// -----

// softplus has a row sum: weighted like softmax, and it writes lse.

// CHECK-LABEL: func.func @merge_softplus(
// CHECK: scf.parallel
// CHECK: arith.maximumf
// CHECK: math.exp
// CHECK: math.log
// CHECK: scf.if
// CHECK: memref.store
// CHECK: } {attn.work_loop}
func.func @merge_softplus(%op: memref<?x?x?x?x?xf32>, %lp: memref<?x?x?x?xf32>,
                          %o: memref<?x?x?x16xf32>, %lse: memref<?x?x?xf32>) {
  attn.merge_splits ins(%op, %lp : memref<?x?x?x?x?xf32>, memref<?x?x?x?xf32>)
      outs(%o : memref<?x?x?x16xf32>) lse(%lse : memref<?x?x?xf32>) normalize = softplus
  return
}

// -----

// relu has no row sum: the parts' results add up, no weights, no lse read.

// CHECK-LABEL: func.func @merge_relu(
// CHECK-SAME: %[[OP:[a-z0-9]+]]: memref<?x?x?x?x?xf32>, %[[LP:[a-z0-9]+]]: memref<?x?x?x?xf32>, %[[O:[a-z0-9]+]]: memref<?x?x?x16xf32>
// CHECK: scf.parallel
// CHECK-NOT: %[[LP]]
// CHECK-NOT: math.exp
// CHECK: scf.for %[[D:.+]] = %c0{{.*}} to %c16
// CHECK: %[[SUM:.+]] = scf.for
// CHECK: %[[OI:.+]] = memref.load %[[OP]]
// CHECK: arith.addf %{{.+}}, %[[OI]]
// CHECK: memref.store %[[SUM]], %[[O]]
// CHECK-NOT: memref.store
// CHECK: } {attn.work_loop}
func.func @merge_relu(%op: memref<?x?x?x?x?xf32>, %lp: memref<?x?x?x?xf32>,
                      %o: memref<?x?x?x16xf32>) {
  attn.merge_splits ins(%op, %lp : memref<?x?x?x?x?xf32>, memref<?x?x?x?xf32>)
      outs(%o : memref<?x?x?x16xf32>) normalize = relu
  return
}
