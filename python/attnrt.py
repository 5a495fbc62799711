"""attnrt for Python: run attnc bundles on numpy arrays or torch tensors.

    import attnrt
    mod = attnrt.load("sliding.attnpkg")            # written by `attnc compile`
    kernel = mod.kernel("sliding_sink")
    o = kernel(q, k, v, window=1024)                 # numpy in, numpy out
    o, lse = kernel(q, k, v, doc=doc_ids)            # with lse when compiled --lse
    dq, dk, dv, g = kernel.backward(q, k, v, o, lse, do, grads=["bias"],
                                    bias=bias)       # compiled --backward

Arrays are passed by pointer (no copies); the innermost dimension must be
contiguous. bf16 data is given as numpy uint16 arrays (bit patterns) or as
torch.bfloat16 tensors. Errors raise attnrt.Error whose .argument names the
bad argument; nothing is written when a launch fails.

Kernels compiled for a GPU (sm_80, sm_90a; gfx90a, gfx942, gfx950 with a
ROCm build of torch) take torch CUDA tensors, captured tensors included,
and run on the tensors' device. They launch on `stream=` (a CUstream /
hipStream_t handle as an int, or a torch.cuda.Stream), by default on
torch's current stream, so they order with the surrounding torch work;
outputs they allocate are on q's device. Given host arrays instead (all of
them), a GPU kernel copies them to device memory, runs to completion and
copies o and lse back (attn::Kernel::launchHost).

Kernel.backward computes the gradients of sum(o * do) for kernels
compiled with --backward, where the forward runs: a GPU kernel's on torch
CUDA tensors on `stream=` (torch's current stream by default), or on host
arrays (staged copies, like the forward); attn_torch.py (next to this
file) wraps forward and backward in a torch.autograd.Function
(docs/python.md).

use_gpu_simulator(path) (or the environment variable ATTN_GPU_SIMULATOR)
runs GPU kernels on a functional simulator, such as attnc's
lib/libattnsim_cuda.so, instead of a GPU: give them host arrays.

The shared library is found through $ATTNRT_LIB, next to this file, one
folder up (the install tree's lib/attnc/attnrt.py), in ../lib, or on the
system library path.
"""
import ctypes
import ctypes.util
import json
import numbers
import os

__all__ = ["Error", "Module", "Kernel", "load", "use_gpu_simulator"]

F32, F16, BF16, I32, I8, F8E4M3, F8E5M2 = 0, 1, 2, 3, 4, 5, 6
ARG_INT, ARG_FLOAT, ARG_TENSOR = 0, 1, 2


class Error(RuntimeError):
    """A failed load or launch; .argument names what was wrong."""

    def __init__(self, message, argument=""):
        super().__init__(message)
        self.argument = argument


class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int32),
                ("rank", ctypes.c_int32),
                ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64))]


class _Arg(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("kind", ctypes.c_int32),
                ("i", ctypes.c_int64), ("f", ctypes.c_double),
                ("tensor", _Tensor)]


class _Grad(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("tensor", _Tensor)]


def _find_library():
    env = os.environ.get("ATTNRT_LIB")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "libattnrt.so"),
                      os.path.join(here, "..", "libattnrt.so"),
                      os.path.join(here, "..", "lib", "libattnrt.so")):
        if os.path.exists(candidate):
            return candidate
    found = ctypes.util.find_library("attnrt")
    if not found:
        raise Error("libattnrt.so not found; set ATTNRT_LIB")
    return found


_lib = None


def _library():
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(_find_library())
        lib.attn_abi_version.restype = ctypes.c_int
        if lib.attn_abi_version() != 1:
            raise Error("libattnrt has C ABI version %d; this module needs 1"
                        % lib.attn_abi_version())
        lib.attn_last_error.restype = ctypes.c_char_p
        lib.attn_last_error_argument.restype = ctypes.c_char_p
        lib.attn_module_load.argtypes = [ctypes.c_char_p,
                                         ctypes.POINTER(ctypes.c_void_p)]
        lib.attn_module_free.argtypes = [ctypes.c_void_p]
        lib.attn_module_kernel.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                           ctypes.POINTER(ctypes.c_void_p)]
        lib.attn_module_kernel_names.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_size_t)]
        lib.attn_kernel_free.argtypes = [ctypes.c_void_p]
        lib.attn_kernel_info_json.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_size_t)]
        lib.attn_kernel_launch.argtypes = [
            ctypes.c_void_p] + [ctypes.POINTER(_Tensor)] * 5 + [
            ctypes.POINTER(_Arg), ctypes.c_int32, ctypes.c_void_p]
        lib.attn_kernel_launch_host.argtypes = [
            ctypes.c_void_p] + [ctypes.POINTER(_Tensor)] * 5 + [
            ctypes.POINTER(_Arg), ctypes.c_int32]
        backward = [ctypes.c_void_p] + [ctypes.POINTER(_Tensor)] * 9 + [
            ctypes.POINTER(_Grad), ctypes.c_int32,
            ctypes.POINTER(_Arg), ctypes.c_int32]
        # attn_kernel_backward_host (host memory for every target) came
        # with the stream argument of attn_kernel_backward (device memory
        # for GPU kernels); an older library's attn_kernel_backward has
        # neither and takes host memory.
        if hasattr(lib, "attn_kernel_backward_host"):
            lib.attn_kernel_backward.argtypes = backward + [ctypes.c_void_p]
            lib.attn_kernel_backward_host.argtypes = backward
        elif hasattr(lib, "attn_kernel_backward"):
            lib.attn_kernel_backward.argtypes = backward
        lib.attn_use_gpu_simulator.argtypes = [ctypes.c_char_p,
                                               ctypes.c_char_p]
        _lib = lib
    return _lib


def _check(status):
    if status != 0:
        lib = _library()
        raise Error(lib.attn_last_error().decode(),
                    lib.attn_last_error_argument().decode())


def _string_out(fn, handle):
    needed = ctypes.c_size_t(0)
    _check(fn(handle, None, 0, ctypes.byref(needed)))
    buffer = ctypes.create_string_buffer(needed.value)
    _check(fn(handle, buffer, needed.value, None))
    return buffer.value.decode()


_DTYPE_CODES = {"f32": F32, "f16": F16, "bf16": BF16, "i32": I32}
# numpy has no fp8: uint8 arrays hold fp8 codes of the kernel's kv_dtype.
_BYTE_CODES = {"fp8e4m3": F8E4M3, "fp8e5m2": F8E5M2}


_CASTS = {"float64": "np.float32", "int64": "np.int32", "bool": "np.int32",
          "uint32": "np.int32", "int16": "np.int32"}


def _describe(x, keep, byte_code=F8E4M3, name=""):
    """A _Tensor for a numpy array or torch tensor (kept alive in keep);
    errors name the argument `name`."""
    module = type(x).__module__
    if module.startswith("torch"):
        import torch
        codes = {torch.float32: F32, torch.float16: F16,
                 torch.bfloat16: BF16, torch.int32: I32, torch.int8: I8,
                 torch.uint8: byte_code}
        for fp8, code in (("float8_e4m3fn", F8E4M3),
                          ("float8_e5m2", F8E5M2)):
            if hasattr(torch, fp8):
                codes[getattr(torch, fp8)] = code
        if x.dtype not in codes:
            raise Error("%s: unsupported torch dtype %s" % (name, x.dtype),
                        name)
        code, data = codes[x.dtype], x.data_ptr()
        shape, strides = list(x.shape), list(x.stride())
    else:
        import numpy as np
        x = np.asarray(x)
        codes = {np.dtype(np.float32): F32, np.dtype(np.float16): F16,
                 np.dtype(np.uint16): BF16, np.dtype(np.int32): I32,
                 np.dtype(np.int8): I8, np.dtype(np.uint8): byte_code}
        if x.dtype not in codes:
            cast = _CASTS.get(str(x.dtype))
            raise Error("%s: unsupported numpy dtype %s (float32, float16, "
                        "int32, uint16 for bf16, int8 or uint8 for K/V "
                        "codes)%s" % (name, x.dtype,
                                      "; convert with x.astype(%s)" % cast
                                      if cast else ""), name)
        code, data = codes[x.dtype], x.ctypes.data
        shape = list(x.shape)
        # Byte strides that are not whole elements cannot be expressed
        # (flooring them read other rows).
        if any(s % x.itemsize for s in x.strides):
            raise Error("%s: strides %s (bytes) are not multiples of the "
                        "element size %d; pass a copy (np.ascontiguousarray)"
                        % (name, tuple(x.strides), x.itemsize), name)
        strides = [s // x.itemsize for s in x.strides]
    shape_arr = (ctypes.c_int64 * len(shape))(*shape)
    stride_arr = (ctypes.c_int64 * len(strides))(*strides)
    keep.extend([x, shape_arr, stride_arr])
    return _Tensor(data, code, len(shape), shape_arr, stride_arr)


def _is_torch(x):
    return type(x).__module__.startswith("torch")


def _on_gpu(x):
    return _is_torch(x) and bool(getattr(x, "is_cuda", False))


def _encode_args(args, keep, byte_code=F8E4M3):
    """The attn_arg array for params (numbers) and tensors, by name."""
    c_args = (_Arg * max(1, len(args)))()
    for i, (name, value) in enumerate(args.items()):
        encoded = name.encode()
        keep.append(encoded)
        c_args[i].name = encoded
        # numbers.* also covers numpy scalars (np.int32, np.float32).
        if isinstance(value, numbers.Integral):
            c_args[i].kind, c_args[i].i = ARG_INT, int(value)
        elif isinstance(value, numbers.Real):
            c_args[i].kind, c_args[i].f = ARG_FLOAT, float(value)
        else:
            c_args[i].kind = ARG_TENSOR
            c_args[i].tensor = _describe(value, keep, byte_code, name)
    return c_args


class Kernel:
    """One compiled variant; call it to launch."""

    def __init__(self, handle, owner):
        self._handle = handle
        self._owner = owner
        self.info = json.loads(_string_out(_library().attn_kernel_info_json,
                                           handle))

    def __del__(self):
        if getattr(self, "_handle", None) and _lib is not None:
            _lib.attn_kernel_free(self._handle)
            self._handle = None

    def _empty_like_out(self, q, shape, dtype):
        if _is_torch(q):
            import torch
            tdt = {"f32": torch.float32, "f16": torch.float16,
                   "bf16": torch.bfloat16}[dtype]
            return torch.empty(shape, dtype=tdt, device=q.device)
        import numpy as np
        ndt = {"f32": np.float32, "f16": np.float16, "bf16": np.uint16}[dtype]
        return np.empty(shape, dtype=ndt)

    def _check_placement(self, named):
        """Checks that every (name, value) is an array, a tensor, a number or
        None, and that the tensors live where the kernel runs; returns
        (gpu, staged): a GPU kernel, given host arrays only."""
        gpu = self.info.get("target", "cpu") != "cpu"
        # Arrays or tensors only (a list has no shape or dtype to check).
        for name, t in named:
            if t is None or isinstance(t, numbers.Number):
                continue
            if not hasattr(t, "shape") or not hasattr(t, "dtype"):
                # A list's element type would be a guess (Python floats are
                # float64): ask for an array of the dtype the kernel takes.
                raise Error("%s: expected a numpy array or torch tensor, got "
                            "%s (e.g. np.asarray(x, dtype=np.float32))"
                            % (name, type(t).__name__), name)
        # A host pointer in a GPU kernel (or the reverse) would fault, not
        # fail cleanly: check where every tensor lives before launching.
        # GPU kernels take host arrays too when all of them are (copied).
        tensors = [(n, t) for n, t in named
                   if t is not None and not isinstance(t, numbers.Number)]
        staged = gpu and not any(_on_gpu(t) for _, t in tensors)
        for name, t in tensors:
            if _on_gpu(t) != (gpu and not staged):
                raise Error(("%s kernels take torch CUDA tensors, or host "
                             "arrays for all tensors" if gpu else
                             "%s kernels take host memory, not CUDA tensors")
                            % self.info.get("target", "cpu"), name)
        return gpu, staged

    def __call__(self, q, k, v, o=None, lse=None, stream=None, **args):
        """Runs the kernel; returns o, or (o, lse) when compiled with lse.

        Quantized or paged kernels take k_scale, v_scale, page_table and
        seq_lens as keyword arguments (attn::Tensors)."""
        gpu, staged = self._check_placement(
            [("q", q), ("k", k), ("v", v), ("o", o), ("lse", lse)]
            + list(args.items()))
        batch, heads, seq = q.shape[0], q.shape[1], q.shape[2]
        if o is None:
            o = self._empty_like_out(
                q, (batch, heads, seq, self.info["value_head_dim"]),
                self.info["out_dtype"])
        if lse is None and self.info["lse"]:
            lse = self._empty_like_out(q, (batch, heads, seq), "f32")
        keep = []
        byte_code = _BYTE_CODES.get(self.info.get("kv_dtype", "same"), F8E4M3)
        tensors = [_describe(t, keep, byte_code, n)
                   for n, t in (("q", q), ("k", k), ("v", v), ("o", o))]
        lse_desc = (_describe(lse, keep, name="lse") if lse is not None
                    else None)
        c_args = _encode_args(args, keep, byte_code)

        def launch(on_stream):
            _check(_library().attn_kernel_launch(
                self._handle, *[ctypes.byref(t) for t in tensors],
                ctypes.byref(lse_desc) if lse_desc is not None else None,
                c_args, len(args), on_stream))

        if staged:
            _check(_library().attn_kernel_launch_host(
                self._handle, *[ctypes.byref(t) for t in tensors],
                ctypes.byref(lse_desc) if lse_desc is not None else None,
                c_args, len(args)))
        elif not gpu:
            launch(stream)
        else:
            import torch
            # attnrt launches in the calling thread's current CUDA context:
            # make it q's device's primary context (the one torch uses).
            with torch.cuda.device(q.device):
                if stream is None:
                    stream = torch.cuda.current_stream(q.device)
                launch(getattr(stream, "cuda_stream", stream))
        return (o, lse) if self.info["lse"] else o

    def backward(self, q, k, v, o, lse, dout, grads=(), dq=None, dk=None,
                 dv=None, stream=None, **args):
        """The gradients of L = sum(o * dout) (DSL.md "Backward"); returns
        (dq, dk, dv, {name: gradient}).

        q, k, v, o and lse are the forward's inputs and outputs (lse as the
        forward wrote it for softmax and softplus kernels, None for sigmoid,
        relu and relu2), dout has o's shape and dtype, and args are the
        forward's params and captured tensors. grads names the f32 params
        and f32 captured tensors to differentiate: a name, a sequence of
        names, or a dict {name: output array} (None to allocate); a param's
        gradient has shape [1], a tensor's the tensor's shape, both f32. dq,
        dk and dv (q's, k's and v's shapes and dtypes) are allocated unless
        given. The kernel must be compiled with --backward.
        Deterministic: the same inputs give the same bits. Errors raise
        Error naming the argument ("dout" for the C ABI's "do").

        Like __call__, a GPU kernel takes torch CUDA tensors (all of them)
        and runs on `stream` (a CUstream / hipStream_t handle as an int, or
        a torch.cuda.Stream; by default torch's current stream, so it
        orders with the surrounding torch work, and returns before the
        gradients are written, as torch ops do), or host arrays for every
        tensor (copied to the device and back, run to completion)."""
        if isinstance(grads, str):
            grads = (grads,)
        if not isinstance(grads, dict):
            grads = {name: None for name in grads}
        for name in grads:
            if not isinstance(name, str):
                raise Error("grads: expected names (str), got %s"
                            % type(name).__name__, "grads")
        gpu, staged = self._check_placement(
            [("q", q), ("k", k), ("v", v), ("o", o), ("lse", lse),
             ("dout", dout), ("dq", dq), ("dk", dk), ("dv", dv)]
            + [(n, t) for n, t in grads.items()] + list(args.items()))

        def like(x, shape=None, dtype=None):
            if _is_torch(x):
                import torch
                return torch.empty(tuple(x.shape) if shape is None else shape,
                                   dtype=x.dtype if dtype is None else dtype,
                                   device=x.device)
            import numpy as np
            x = np.asarray(x)
            return np.empty(x.shape if shape is None else shape,
                            dtype=x.dtype if dtype is None else dtype)

        def f32(shape):
            if _is_torch(q):
                import torch
                return torch.empty(shape, dtype=torch.float32,
                                   device=q.device)
            import numpy as np
            return np.empty(shape, dtype=np.float32)

        dq = like(q) if dq is None else dq
        dk = like(k) if dk is None else dk
        dv = like(v) if dv is None else dv
        captures = {c["name"] for c in self.info.get("captures", [])}
        out = {}
        for name, given in grads.items():
            if given is not None:
                out[name] = given
            elif name in captures and hasattr(args.get(name), "shape"):
                out[name] = f32(tuple(args[name].shape))
            else:
                # A param's [1]; the runtime names any other name.
                out[name] = f32((1,))
        keep = []
        byte_code = _BYTE_CODES.get(self.info.get("kv_dtype", "same"), F8E4M3)
        described = [_describe(t, keep, byte_code, n) for n, t in (
            ("q", q), ("k", k), ("v", v), ("o", o))]
        lse_desc = (_describe(lse, keep, name="lse") if lse is not None
                    else None)
        described += [_describe(t, keep, name=n) for n, t in (
            ("dout", dout), ("dq", dq), ("dk", dk), ("dv", dv))]
        c_grads = (_Grad * max(1, len(out)))()
        for i, (name, t) in enumerate(out.items()):
            encoded = name.encode()
            keep.append(encoded)
            c_grads[i].name = encoded
            c_grads[i].tensor = _describe(t, keep, name=name)
        c_args = _encode_args(args, keep, byte_code)
        lib = _library()
        if not hasattr(lib, "attn_kernel_backward"):
            raise Error("this libattnrt has no attn_kernel_backward; use a "
                        "newer build", "kernel")
        device = gpu and not staged
        streams = hasattr(lib, "attn_kernel_backward_host")
        if device and not streams:
            raise Error("this libattnrt's backward takes host memory only "
                        "(no attn_kernel_backward_host): pass host arrays or "
                        "use a newer build", "kernel")
        refs = [ctypes.byref(t) for t in described]
        call = [self._handle, *refs[:4],
                ctypes.byref(lse_desc) if lse_desc is not None else None,
                *refs[4:], c_grads, len(out), c_args, len(args)]
        try:
            if not device:
                # Host memory: a CPU kernel's, or a GPU kernel's staged.
                _check(lib.attn_kernel_backward_host(*call) if streams
                       else lib.attn_kernel_backward(*call))
            else:
                import torch
                # As in __call__: q's device's primary context, torch's
                # current stream there unless given.
                with torch.cuda.device(q.device):
                    if stream is None:
                        stream = torch.cuda.current_stream(q.device)
                    _check(lib.attn_kernel_backward(
                        *call, getattr(stream, "cuda_stream", stream)))
        except Error as e:
            if e.argument == "do":
                message = str(e)
                if message.startswith("do:"):
                    message = "dout:" + message[3:]
                raise Error(message, "dout") from None
            raise
        return dq, dk, dv, out


class Module:
    """A loaded bundle (.attnpkg)."""

    def __init__(self, path):
        handle = ctypes.c_void_p()
        _check(_library().attn_module_load(os.fsencode(path),
                                           ctypes.byref(handle)))
        self._handle = handle

    def __del__(self):
        if getattr(self, "_handle", None) and _lib is not None:
            _lib.attn_module_free(self._handle)
            self._handle = None

    def names(self):
        text = _string_out(_library().attn_module_kernel_names, self._handle)
        return text.split("\n") if text else []

    def kernel(self, name):
        handle = ctypes.c_void_p()
        _check(_library().attn_module_kernel(self._handle, name.encode(),
                                             ctypes.byref(handle)))
        return Kernel(handle, self)


def load(path):
    """Loads a bundle written by `attnc compile`."""
    return Module(path)


def use_gpu_simulator(cuda_library, hip_library=None):
    """Runs this process's GPU kernels on functional simulators (libraries
    exporting the CUDA driver / HIP runtime API, such as attnc's
    lib/libattnsim_cuda.so) instead of GPUs; None or "" keeps that vendor's
    runtime (attn::useGpuSimulator). Launch them on host arrays."""
    _check(_library().attn_use_gpu_simulator(
        os.fsencode(cuda_library) if cuda_library else None,
        os.fsencode(hip_library) if hip_library else None))
