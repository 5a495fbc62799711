/*===- attn/runtime_c.h - C ABI of attnrt ----------------------------------===
 *
 * A stable C interface to load bundles and launch kernels, for other
 * languages (the Python module in python/attnrt.py uses it through ctypes).
 * Every function returns 0 on success; on failure it returns nonzero and
 * attn_last_error() / attn_last_error_argument() describe the problem for
 * the calling thread. Nothing is written to outputs when a launch fails.
 *
 *===----------------------------------------------------------------------===*/
#ifndef ATTN_RUNTIME_C_H
#define ATTN_RUNTIME_C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
  ATTN_F32 = 0, ATTN_F16 = 1, ATTN_BF16 = 2, ATTN_I32 = 3,
  ATTN_I8 = 4, ATTN_F8E4M3 = 5, ATTN_F8E5M2 = 6 /* quantized K/V codes */
};
enum { ATTN_ARG_INT = 0, ATTN_ARG_FLOAT = 1, ATTN_ARG_TENSOR = 2 };

/* A view of caller memory; strides in elements, NULL for row-major. */
typedef struct {
  void *data;
  int32_t dtype;
  int32_t rank;
  const int64_t *shape;
  const int64_t *strides;
} attn_tensor;

/* A runtime param (int or float) or a captured tensor, by name. */
typedef struct {
  const char *name;
  int32_t kind;
  int64_t i;
  double f;
  attn_tensor tensor;
} attn_arg;

typedef struct attn_module attn_module;
typedef struct attn_kernel attn_kernel;

#define ATTN_C_ABI_VERSION 1
int attn_abi_version(void);

int attn_module_load(const char *path, attn_module **out);
void attn_module_free(attn_module *module);
/* Kernel names separated by '\n'; *needed gets the size with the NUL. */
int attn_module_kernel_names(const attn_module *module, char *buffer,
                             size_t size, size_t *needed);
int attn_module_kernel(const attn_module *module, const char *name,
                       attn_kernel **out);
void attn_kernel_free(attn_kernel *kernel);

/* The kernel's metadata as JSON (name, dtypes, head dims, params with
 * defaults, captured tensors with their dims; for a bundle's CPU kernel,
 * "cpu": the CPU of the binary the loader picked). */
int attn_kernel_info_json(const attn_kernel *kernel, char *buffer,
                          size_t size, size_t *needed);

/* lse may be NULL when the kernel has none. Quantized and paged K/V take
 * their extra tensors as ATTN_ARG_TENSOR args named "k_scale", "v_scale",
 * "page_table" and "seq_lens" (see attn::Tensors). */
int attn_kernel_launch(const attn_kernel *kernel, const attn_tensor *q,
                       const attn_tensor *k, const attn_tensor *v,
                       const attn_tensor *o, const attn_tensor *lse,
                       const attn_arg *args, int32_t num_args, void *stream);

/* attn_kernel_launch on host memory for every target (see
 * attn::Kernel::launchHost): a GPU kernel's tensors are copied to device
 * memory, it runs to completion, and o and lse are copied back. */
int attn_kernel_launch_host(const attn_kernel *kernel, const attn_tensor *q,
                            const attn_tensor *k, const attn_tensor *v,
                            const attn_tensor *o, const attn_tensor *lse,
                            const attn_arg *args, int32_t num_args);

/* A gradient output of attn_kernel_backward, by the name of the f32 param
 * ([1] f32) or f32 captured tensor (f32, its shape) it is the gradient of. */
typedef struct {
  const char *name;
  attn_tensor tensor;
} attn_grad;

/* The gradients of L = sum(o * dout) (see attn::Kernel::backward) for a
 * kernel compiled with backward: q, k, v, o and lse as the forward took
 * and wrote them (lse NULL for normalizers without a row sum: sigmoid,
 * relu, relu2), args as the forward's; dq, dk and dv are written, and so is
 * each of the num_grads param/tensor gradients. As attn_kernel_launch, a
 * GPU kernel takes device memory and queues on `stream`. Deterministic for
 * any thread count. Nothing is written when it fails. */
int attn_kernel_backward(const attn_kernel *kernel, const attn_tensor *q,
                         const attn_tensor *k, const attn_tensor *v,
                         const attn_tensor *o, const attn_tensor *lse,
                         const attn_tensor *dout, const attn_tensor *dq,
                         const attn_tensor *dk, const attn_tensor *dv,
                         const attn_grad *grads, int32_t num_grads,
                         const attn_arg *args, int32_t num_args, void *stream);

/* attn_kernel_backward on host memory for every target (see
 * attn::Kernel::backwardHost). */
int attn_kernel_backward_host(const attn_kernel *kernel, const attn_tensor *q,
                              const attn_tensor *k, const attn_tensor *v,
                              const attn_tensor *o, const attn_tensor *lse,
                              const attn_tensor *dout, const attn_tensor *dq,
                              const attn_tensor *dk, const attn_tensor *dv,
                              const attn_grad *grads, int32_t num_grads,
                              const attn_arg *args, int32_t num_args);

/* GPU launches of this process then open these functional simulators
 * instead of libcuda.so.1 / libamdhip64 (see attn::useGpuSimulator); NULL
 * or "" keeps that vendor's runtime. The environment variables
 * ATTN_GPU_SIMULATOR and ATTN_GPU_SIMULATOR_HIP do the same without a
 * call. */
int attn_use_gpu_simulator(const char *cuda_library, const char *hip_library);

const char *attn_last_error(void);
const char *attn_last_error_argument(void);

#ifdef __cplusplus
}
#endif

#endif /* ATTN_RUNTIME_C_H */
