// RUN: attn-opt %s --pass-pipeline='builtin.module(func.func(attn-classify-mask,attn-tile{block-q=32 block-kv=32}))' | FileCheck %s

// The select pre-pass (a block_map op with `select`) works on groups of
// query blocks of the rule (512 rows: 8 blocks of 64): it pools every key
// block once per work item (on the heap), then per query block pools q,
// scores the eligible key blocks, keeps the top k (plus the diagonal block)
// and writes tile classes: EMPTY outside kept blocks, the mask's class
// inside them.

// CHECK-LABEL: func.func @moba_map(
// CHECK-SAME: %[[MAP:[a-z0-9]+]]: memref<?x?x?x?xi8>
//      Work items: one per 512 query rows.
// CHECK: %[[NQB:.+]] = arith.ceildivui %{{.+}}, %c512
// CHECK: scf.parallel ({{.*}}) to ({{.*}}, %[[NQB]])
//      The key blocks' means, once per item.
// CHECK: %[[PK:.+]] = memref.alloc(%{{.+}}) : memref<?x32xf32>
// CHECK: memref.store %{{.+}}, %[[PK]]
//      Its query blocks: pooled q, then per key block eligibility and the
//      score from the pooled keys.
// CHECK: %[[FIRST:.+]] = arith.muli %{{.+}}, %c8
// CHECK: scf.for %{{.+}} = %[[FIRST]]
// CHECK: memref.alloca() : memref<32xf32>
// CHECK: memref.alloca(%{{.+}}) : memref<?xf32>
// CHECK: scf.while
// CHECK: memref.load %[[PK]]
// CHECK: arith.mulf
//      topk: rounds of argmax over eligible, unkept blocks.
// CHECK: arith.fptosi
// CHECK: scf.for
// CHECK: arith.cmpf ogt
//      Tile classes; the pooled keys are freed with the item.
// CHECK: memref.store %{{.+}}, %[[MAP]]
// CHECK: memref.dealloc %[[PK]]
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

// mass(P) (SelectBlocks.cpp, shared with the GPU pre-pass): the softmax over
// the pooled scores, a bitonic sort of the blocks (eligible first: bit 30
// of the key; then the higher score, then the lower index), and a walk
// keeping blocks while their shares sum below P.

// CHECK-LABEL: func.func @flex_map(
// CHECK: %[[SKEY:.+]] = memref.alloca(%{{.+}}) : memref<?xi32>
// CHECK: arith.maximumf
// CHECK: math.exp
// CHECK: scf.while
// CHECK: memref.load %[[SKEY]]
// CHECK: arith.andi %{{.+}}, %c1073741824_i32
// CHECK: arith.cmpf ogt
// CHECK: arith.cmpf oeq
// CHECK: arith.cmpi ult
// CHECK: arith.cmpf olt
// CHECK: math.exp
// CHECK: arith.divf
// CHECK: memref.store %{{.+}}, %[[MAP2:[a-z0-9]+]]
func.func @flex_map(%q: memref<?x?x?x32xf32>, %o: memref<?x?x?x32xf32>,
                    %map: memref<?x?x?x?xi8>) {
  attn.attention ins(%q, %q, %q : memref<?x?x?x32xf32>, memref<?x?x?x32xf32>, memref<?x?x?x32xf32>)
      outs(%o : memref<?x?x?x32xf32>) block_map(%map : memref<?x?x?x?xi8>)
      normalize = softmax scale = 0.125 select mass block 64
  mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    %c = arith.cmpi sle, %kv, %qi : i32
    attn.yield %c : i1
  } select_arg {
    %f = arith.constant 0.9 : f32
    attn.yield %f : f32
  }
  return
}

// above(T): every eligible block scoring above T, then the diagonal block
// when there are blocks.

// CHECK-LABEL: func.func @theta_map(
// CHECK: memref.alloca(%[[NKB:.+]]) : memref<?xi8>
// CHECK-NEXT: %[[KEPT:.+]] = memref.alloca(%[[NKB]]) : memref<?xi8>
// CHECK: scf.for %[[KB:.+]] = %{{.+}} to %[[NKB]]
// CHECK: %[[OVER:.+]] = arith.cmpf ogt, %{{.+}}, %{{.+}} : f32
// CHECK: %[[TAKE:.+]] = arith.andi %{{.+}}, %[[OVER]] : i1
// CHECK: scf.if %[[TAKE]]
// CHECK: memref.store %{{.+}}, %[[KEPT]][%[[KB]]]
// CHECK: arith.cmpi ugt, %[[NKB]]
// CHECK: scf.if
// CHECK: memref.store %{{.+}}, %[[KEPT]]
func.func @theta_map(%q: memref<?x?x?x32xf32>, %o: memref<?x?x?x32xf32>,
                     %map: memref<?x?x?x?xi8>) {
  attn.attention ins(%q, %q, %q : memref<?x?x?x32xf32>, memref<?x?x?x32xf32>, memref<?x?x?x32xf32>)
      outs(%o : memref<?x?x?x32xf32>) block_map(%map : memref<?x?x?x?xi8>)
      normalize = softmax scale = 0.125 select above block 64
  select_arg {
    %f = arith.constant 0.05 : f32
    attn.yield %f : f32
  }
  return
}
