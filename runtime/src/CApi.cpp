//===- CApi.cpp - the C ABI over attn::Module and attn::Kernel ------------===//
#include "attn/runtime_c.h"

#include "attn/runtime.h"
#include "runtime/support/Manifest.h"

#include <cstring>
#include <string>

struct attn_module {
  attn::Module module;
};
struct attn_kernel {
  attn::Kernel kernel;
};

namespace {

thread_local std::string lastError;
thread_local std::string lastArgument;

int fail(const std::string &argument, const std::string &message) {
  lastArgument = argument;
  lastError = message;
  return 1;
}

/// Runs `fn`, turning exceptions into an error code and a message.
template <typename Fn> int guarded(Fn fn) {
  lastError.clear();
  lastArgument.clear();
  try {
    fn();
    return 0;
  } catch (const attn::Error &e) {
    return fail(e.argument(), e.what());
  } catch (const std::exception &e) {
    return fail("", e.what());
  }
}

int copyOut(const std::string &text, char *buffer, size_t size,
            size_t *needed) {
  if (needed)
    *needed = text.size() + 1;
  if (buffer && size > 0) {
    size_t n = std::min(size - 1, text.size());
    std::memcpy(buffer, text.data(), n);
    buffer[n] = '\0';
    if (n < text.size())
      return fail("buffer", "buffer too small: need " +
                                std::to_string(text.size() + 1) + " bytes");
  }
  return 0;
}

attn::TensorRef toRef(const attn_tensor &t, const char *name) {
  if (t.dtype < ATTN_F32 || t.dtype > ATTN_F8E5M2)
    throw attn::Error(name, "unknown dtype code " + std::to_string(t.dtype));
  if (t.rank < 0 || t.rank > 8 || (t.rank > 0 && !t.shape))
    throw attn::Error(name, "bad rank or shape");
  static const attn::DType dtypes[] = {
      attn::DType::f32, attn::DType::f16,    attn::DType::bf16,
      attn::DType::i32, attn::DType::i8,     attn::DType::f8e4m3,
      attn::DType::f8e5m2};
  std::vector<int64_t> shape(t.shape, t.shape + t.rank);
  std::vector<int64_t> strides;
  if (t.strides)
    strides.assign(t.strides, t.strides + t.rank);
  return attn::TensorRef(t.data, dtypes[t.dtype], shape, strides);
}

/// Converts a launch's C arguments and hands them to `launch`.
template <typename Fn>
int launchWith(const attn_kernel *kernel, const attn_tensor *q,
               const attn_tensor *k, const attn_tensor *v,
               const attn_tensor *o, const attn_tensor *lse,
               const attn_arg *args, int32_t num_args, Fn launch) {
  if (!kernel)
    return fail("kernel", "null kernel");
  if (!q || !k || !v || !o)
    return fail(!q ? "q" : !k ? "k" : !v ? "v" : "o", "null tensor");
  if (num_args < 0 || (num_args > 0 && !args))
    return fail("args", "bad argument list");
  return guarded([&] {
    attn::Tensors t;
    t.q = toRef(*q, "q");
    t.k = toRef(*k, "k");
    t.v = toRef(*v, "v");
    t.o = toRef(*o, "o");
    if (lse)
      t.lse = toRef(*lse, "lse");
    attn::Params params;
    for (int32_t i = 0; i < num_args; ++i) {
      const attn_arg &a = args[i];
      if (!a.name)
        throw attn::Error("args", "argument " + std::to_string(i) +
                                      " has no name");
      switch (a.kind) {
      case ATTN_ARG_INT: params.emplace_back(a.name, a.i); break;
      case ATTN_ARG_FLOAT: params.emplace_back(a.name, a.f); break;
      case ATTN_ARG_TENSOR: {
        // The quantized and paged K/V inputs travel by reserved names.
        std::string name = a.name;
        std::optional<attn::TensorRef> *fixed =
            name == "k_scale"      ? &t.kScale
            : name == "v_scale"    ? &t.vScale
            : name == "page_table" ? &t.pageTable
            : name == "seq_lens"   ? &t.seqLens
                                   : nullptr;
        if (fixed && fixed->has_value())
          throw attn::Error(name, "is passed twice; pass each tensor once");
        if (fixed)
          *fixed = toRef(a.tensor, a.name);
        else
          params.emplace_back(a.name, toRef(a.tensor, a.name));
        break;
      }
      default:
        throw attn::Error(a.name, "unknown argument kind " +
                                      std::to_string(a.kind));
      }
    }
    launch(t, params);
  });
}

} // namespace

extern "C" {

int attn_abi_version(void) { return ATTN_C_ABI_VERSION; }

int attn_module_load(const char *path, attn_module **out) {
  if (!path || !out)
    return fail("path", "null argument");
  return guarded([&] {
    *out = new attn_module{attn::Module::load(path)};
  });
}

void attn_module_free(attn_module *module) { delete module; }

int attn_module_kernel_names(const attn_module *module, char *buffer,
                             size_t size, size_t *needed) {
  if (!module)
    return fail("module", "null module");
  std::string names;
  for (const std::string &n : module->module.kernelNames())
    names += (names.empty() ? "" : "\n") + n;
  lastError.clear();
  return copyOut(names, buffer, size, needed);
}

int attn_module_kernel(const attn_module *module, const char *name,
                       attn_kernel **out) {
  if (!module || !name || !out)
    return fail("name", "null argument");
  return guarded([&] {
    *out = new attn_kernel{module->module.kernel(name)};
  });
}

void attn_kernel_free(attn_kernel *kernel) { delete kernel; }

int attn_kernel_info_json(const attn_kernel *kernel, char *buffer,
                          size_t size, size_t *needed) {
  if (!kernel)
    return fail("kernel", "null kernel");
  std::string json;
  if (int rc = guarded([&] {
        json = attn::manifest::writeKernelInfo(kernel->kernel.info());
      }))
    return rc;
  return copyOut(json, buffer, size, needed);
}

int attn_kernel_launch(const attn_kernel *kernel, const attn_tensor *q,
                       const attn_tensor *k, const attn_tensor *v,
                       const attn_tensor *o, const attn_tensor *lse,
                       const attn_arg *args, int32_t num_args, void *stream) {
  return launchWith(kernel, q, k, v, o, lse, args, num_args,
                    [&](const attn::Tensors &t, const attn::Params &params) {
                      kernel->kernel.launch(t, params, stream);
                    });
}

int attn_kernel_launch_host(const attn_kernel *kernel, const attn_tensor *q,
                            const attn_tensor *k, const attn_tensor *v,
                            const attn_tensor *o, const attn_tensor *lse,
                            const attn_arg *args, int32_t num_args) {
  return launchWith(kernel, q, k, v, o, lse, args, num_args,
                    [&](const attn::Tensors &t, const attn::Params &params) {
                      kernel->kernel.launchHost(t, params);
                    });
}

extern "C++" {
namespace {
/// attn_kernel_backward and attn_kernel_backward_host: the same checks,
/// then `run` with the tensors, the forward's params and the gradients.
template <class Run>
int backwardWith(const attn_kernel *kernel, const attn_tensor *q,
                 const attn_tensor *k, const attn_tensor *v,
                 const attn_tensor *o, const attn_tensor *lse,
                 const attn_tensor *dout, const attn_tensor *dq,
                 const attn_tensor *dk, const attn_tensor *dv,
                 const attn_grad *grads, int32_t num_grads,
                 const attn_arg *args, int32_t num_args, Run run) {
  if (!kernel)
    return fail("kernel", "null kernel");
  if (!dout || !dq || !dk || !dv)
    return fail(!dout ? "do" : !dq ? "dq" : !dk ? "dk" : "dv",
                "null tensor");
  if (num_grads < 0 || (num_grads > 0 && !grads))
    return fail("grads", "bad gradient list");
  return launchWith(
      kernel, q, k, v, o, lse, args, num_args,
      [&](const attn::Tensors &t, const attn::Params &params) {
        attn::Gradients g;
        g.dq = toRef(*dq, "dq");
        g.dk = toRef(*dk, "dk");
        g.dv = toRef(*dv, "dv");
        for (int32_t i = 0; i < num_grads; ++i) {
          if (!grads[i].name)
            throw attn::Error("grads", "gradient " + std::to_string(i) +
                                           " has no name");
          g.named.emplace_back(grads[i].name,
                               toRef(grads[i].tensor, grads[i].name));
        }
        run(t, toRef(*dout, "do"), g, params);
      });
}
} // namespace
} // extern "C++"

int attn_kernel_backward(const attn_kernel *kernel, const attn_tensor *q,
                         const attn_tensor *k, const attn_tensor *v,
                         const attn_tensor *o, const attn_tensor *lse,
                         const attn_tensor *dout, const attn_tensor *dq,
                         const attn_tensor *dk, const attn_tensor *dv,
                         const attn_grad *grads, int32_t num_grads,
                         const attn_arg *args, int32_t num_args,
                         void *stream) {
  return backwardWith(kernel, q, k, v, o, lse, dout, dq, dk, dv, grads,
                      num_grads, args, num_args,
                      [&](const attn::Tensors &t, const attn::TensorRef &dO,
                          const attn::Gradients &g,
                          const attn::Params &params) {
                        kernel->kernel.backward(t, dO, g, params, stream);
                      });
}

int attn_kernel_backward_host(const attn_kernel *kernel, const attn_tensor *q,
                              const attn_tensor *k, const attn_tensor *v,
                              const attn_tensor *o, const attn_tensor *lse,
                              const attn_tensor *dout, const attn_tensor *dq,
                              const attn_tensor *dk, const attn_tensor *dv,
                              const attn_grad *grads, int32_t num_grads,
                              const attn_arg *args, int32_t num_args) {
  return backwardWith(kernel, q, k, v, o, lse, dout, dq, dk, dv, grads,
                      num_grads, args, num_args,
                      [&](const attn::Tensors &t, const attn::TensorRef &dO,
                          const attn::Gradients &g,
                          const attn::Params &params) {
                        kernel->kernel.backwardHost(t, dO, g, params);
                      });
}

int attn_use_gpu_simulator(const char *cuda_library,
                           const char *hip_library) {
  return guarded([&] {
    attn::useGpuSimulator(cuda_library ? cuda_library : "",
                          hip_library ? hip_library : "");
  });
}

const char *attn_last_error(void) { return lastError.c_str(); }
const char *attn_last_error_argument(void) { return lastArgument.c_str(); }

} // extern "C"
