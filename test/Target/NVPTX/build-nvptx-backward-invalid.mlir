// RUN: attn-opt %s --verify-diagnostics --pass-pipeline='builtin.module(attn-build-nvptx-backward{chip=sm_80})'

// The backward kernels join the forward's gpu.module, named after the
// kernel its attn.launch records: without one there is nothing to extend.

// expected-error @+1 {{no gpu.module with attn.launch; run attn-build-nvptx-kernel first}}
module {
  func.func @empty() {
    return
  }
}
