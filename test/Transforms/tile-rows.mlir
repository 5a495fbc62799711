// RUN: attn-opt %s -split-input-file --pass-pipeline='builtin.module(func.func(attn-tile))' | FileCheck %s --check-prefix=ALL
// RUN: attn-opt %s -split-input-file --pass-pipeline='builtin.module(func.func(attn-tile{rows=many}))' | FileCheck %s --check-prefix=MANY
// RUN: attn-opt %s -split-input-file --pass-pipeline='builtin.module(func.func(attn-tile{rows=few}))' | FileCheck %s --check-prefix=FEW
// RUN: not attn-opt %s -split-input-file --pass-pipeline='builtin.module(func.func(attn-tile{rows=some}))' 2>&1 | FileCheck %s --check-prefix=BAD

// The query-tile widths a kernel is built for. all: 64-row tiles, and for
// tiles with at most 16 valid rows the 16-row and 4-row (in place) paths,
// chosen per work item. many: 64-row tiles only (a launch's last tile with
// few rows runs padded). few: only the narrow and in-place paths, for
// launches whose rows per kv head never exceed 16. Where whole tiles are
// read in place, so is the last, partial key tile, from a raw copy of its
// rows: few then has no staged tiles at all, and all stages only tiles of
// more than 16 rows; without in-place tiles (kv_index) staged tiles of 4
// rows keep their own code.

func.func @causal(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xf32>,
                  %v: memref<?x?x?x32xf32>, %o: memref<?x?x?x32xf32>) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x32xf32>)
      outs(%o : memref<?x?x?x32xf32>)
      normalize = softmax scale = 0.125
  mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    %c = arith.cmpi sle, %kv, %qi : i32
    attn.yield %c : i1
  }
  return
}

// ALL-LABEL: func.func @causal(
//       Per work item: at most 16 valid rows, at most 4.
// ALL: arith.cmpi ule, %{{.+}}, %c16
// ALL: arith.cmpi ule, %{{.+}}, %c4
//       In place (whole tiles, 4 rows): K rows . Q rows, then P . V rows.
// ALL: linalg.matmul {{.*}}ins({{.*}} : memref<64x64xf32, strided<[64, 1], offset: ?>>, memref<4x64xf32, {{.*}}) outs({{.*}} : memref<64x4xf32>)
// ALL: linalg.matmul {{.*}}outs({{.*}} : memref<4x32xf32, strided<[32, 1], offset: ?>>)
//       Staged tiles 16 and 64 query columns wide.
// ALL-NOT: outs({{.*}} : memref<64x4xf32, strided<[64, 1]>>)
// ALL: linalg.matmul {{.*}}outs({{.*}} : memref<64x16xf32, strided<[64, 1]>>)
// ALL: linalg.matmul {{.*}}outs({{.*}} : memref<64x64xf32>)
// ALL-NOT: outs({{.*}} : memref<4x32xf32, strided<[32, 1]>>)
// ALL: linalg.matmul {{.*}}outs({{.*}} : memref<16x32xf32, strided<[32, 1]>>)
// ALL: linalg.matmul {{.*}}outs({{.*}} : memref<64x32xf32>)

// MANY-LABEL: func.func @causal(
// MANY-NOT: %c16
// MANY-NOT: memref<64x4xf32
// MANY-NOT: memref<64x16xf32
// MANY: linalg.matmul {{.*}}outs({{.*}} : memref<64x64xf32>)
// MANY-NOT: linalg.matmul
// MANY: linalg.matmul {{.*}}outs({{.*}} : memref<64x32xf32>)
// MANY-NOT: linalg.matmul

//       No comparison with 16: every item is narrow, and every key tile
//       (the partial last one too) is read in place, 4 rows at a time.
// FEW-LABEL: func.func @causal(
// FEW-NOT: arith.cmpi ule, %{{.+}}, %c16
// FEW: arith.cmpi ule, %{{.+}}, %c4
// FEW: linalg.matmul {{.*}}ins({{.*}} : memref<64x64xf32, strided<[64, 1], offset: ?>>, memref<4x64xf32, {{.*}}) outs({{.*}} : memref<64x4xf32>)
// FEW: linalg.matmul {{.*}}outs({{.*}} : memref<4x32xf32, strided<[32, 1], offset: ?>>)
// FEW-NOT: linalg.matmul

// -----

func.func @indexed(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xf32>,
                   %v: memref<?x?x?x32xf32>, %o: memref<?x?x?x32xf32>,
                   %idx: memref<?x?x?xi32>) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x32xf32>)
      outs(%o : memref<?x?x?x32xf32>) kv_index(%idx : memref<?x?x?xi32>)
      captures(%idx : memref<?x?x?xi32>) normalize = softmax
  return
}

//       kv_index rows are staged: 4-row tiles keep their dot products.
// ALL-LABEL: func.func @indexed(
// ALL: linalg.matmul {{.*}}outs({{.*}} : memref<64x4xf32, strided<[64, 1]>>)
// ALL: linalg.matmul {{.*}}outs({{.*}} : memref<64x16xf32, strided<[64, 1]>>)
// ALL: linalg.matmul {{.*}}outs({{.*}} : memref<64x64xf32>)
// MANY-LABEL: func.func @indexed(
// MANY-NOT: memref<64x4xf32
// MANY: linalg.matmul {{.*}}outs({{.*}} : memref<64x64xf32>)
// FEW-LABEL: func.func @indexed(
// FEW: linalg.matmul {{.*}}outs({{.*}} : memref<64x4xf32, strided<[64, 1]>>)
// FEW: linalg.matmul {{.*}}outs({{.*}} : memref<64x16xf32, strided<[64, 1]>>)
// FEW-NOT: memref<64x64xf32>)

// BAD: expected rows=all, many or few, got 'some'
