// RUN: attn-opt %s --split-input-file --verify-diagnostics --pass-pipeline='builtin.module(attn-build-nvptx-kernel{chip=sm_80})'

// What the kernel builders refuse is an error on the op, with the text
// attnc reports under --target.

!t = memref<?x?x?x64xf32>
func.func @f32(%q: !t, %k: !t, %v: !t, %o: !t, %classes: memref<?x?x?x?xi8>, %splits: i32, %o_part: memref<?x?x?x?x?xf32>, %lse_part: memref<?x?x?x?xf32>) {
  // expected-error @+1 {{tensor cores take f16 or bf16 inputs; compile with --dtype bf16 or --dtype f16 for GPU targets}}
  attn.attention ins(%q, %k, %v : !t, !t, !t) outs(%o : !t) tile_classes(%classes : memref<?x?x?x?xi8>) splits(%splits) partials(%o_part, %lse_part : memref<?x?x?x?x?xf32>, memref<?x?x?x?xf32>) normalize = softmax scale = 1.250000e-01
  return
}

// -----

// expected-error @+1 {{no attn.attention in the module}}
module {
  func.func @empty() {
    return
  }
}

// -----

!t = memref<?x?x?x64xbf16>
// expected-error @+1 {{2 functions hold an attn.attention; choose one with func=}}
module {
  func.func @a(%q: !t, %k: !t, %v: !t, %o: !t) {
    attn.attention ins(%q, %k, %v : !t, !t, !t) outs(%o : !t) normalize = softmax scale = 1.250000e-01
    return
  }
  func.func @b(%q: !t, %k: !t, %v: !t, %o: !t) {
    attn.attention ins(%q, %k, %v : !t, !t, !t) outs(%o : !t) normalize = softmax scale = 1.250000e-01
    return
  }
}
