// RUN: attn-opt %s --pass-pipeline='builtin.module(func.func(attn-classify-mask,attn-tile{block-q=32 block-kv=32}))' | FileCheck %s

// The select pre-pass (a block_map op with `select`) works per query block
// of the rule: it pools q and each eligible key block's k, scores them,
// keeps the top k (plus the diagonal block) and writes tile classes: EMPTY
// outside kept blocks, the mask's class inside them.

// CHECK-LABEL: func.func @moba_map(
// CHECK-SAME: %[[MAP:[a-z0-9]+]]: memref<?x?x?x?xi8>
//      Work items: one per query block of 64 tokens.
// CHECK: %[[NQB:.+]] = arith.ceildivui %{{.+}}, %c64
// CHECK: scf.parallel ({{.*}}) to ({{.*}}, %[[NQB]])
//      Pooled q, then per key block: eligibility, pooled k, the score.
// CHECK: memref.alloca() : memref<32xf32>
// CHECK: memref.alloca(%{{.+}}) : memref<?xf32>
// CHECK: scf.while
// CHECK: arith.mulf
//      topk: rounds of argmax over eligible, unkept blocks.
// CHECK: arith.fptosi
// CHECK: scf.for
// CHECK: arith.cmpf ogt
//      Tile classes.
// CHECK: memref.store %{{.+}}, %[[MAP]]
func.func @moba_map(%q: memref<?x?x?x32xf32>, %o: memref<?x?x?x32xf32>,
                    %k: i32, %map: memref<?x?x?x?xi8>) {
  attn.attention ins(%q, %q, %q : memref<?x?x?x32xf32>, memref<?x?x?x32xf32>, memref<?x?x?x32xf32>)
      outs(%o : memref<?x?x?x32xf32>) block_map(%map : memref<?x?x?x?xi8>)
      params(%k : i32) normalize = softmax scale = 0.125 select topk block 64
  mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    %c = arith.cmpi sle, %kv, %qi : i32
    attn.yield %c : i1
  } select_arg {
    %f = arith.sitofp %k : i32 to f32
    attn.yield %f : f32
  }
  return
}
