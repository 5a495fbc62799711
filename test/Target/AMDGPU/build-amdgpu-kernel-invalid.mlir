// RUN: attn-opt %s --verify-diagnostics --pass-pipeline='builtin.module(attn-build-amdgpu-kernel{chip=gfx942})'

!t = memref<?x?x?x64xf32>
func.func @f32(%q: !t, %k: !t, %v: !t, %o: !t, %classes: memref<?x?x?x?xi8>, %splits: i32, %o_part: memref<?x?x?x?x?xf32>, %lse_part: memref<?x?x?x?xf32>) {
  // expected-error @+1 {{matrix cores take f16 or bf16 inputs; compile with --dtype bf16 or --dtype f16 for GPU targets}}
  attn.attention ins(%q, %k, %v : !t, !t, !t) outs(%o : !t) tile_classes(%classes : memref<?x?x?x?xi8>) splits(%splits) partials(%o_part, %lse_part : memref<?x?x?x?x?xf32>, memref<?x?x?x?xf32>) normalize = softmax scale = 1.250000e-01
  return
}

