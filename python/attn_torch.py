"""attn_torch: attnc kernels as differentiable PyTorch ops.

    import attnrt, attn_torch
    # attnc compile softcap.attn --head-dim 64 --lse --backward -o softcap
    kernel = attnrt.load("softcap.attnpkg").kernel("softcap")
    cap = torch.tensor(50.0, requires_grad=True)
    o = attn_torch.attention(kernel, q, k, v, cap=cap)
    o.sum().backward()          # q.grad, k.grad, v.grad, cap.grad

attention(kernel, q, k, v, **params_and_tensors) runs the kernel's forward
(attnrt.Kernel.__call__) and returns o; on backward it calls
attnrt.Kernel.backward, which computes the gradients of sum(o * do) with
respect to q, k, v and every f32 param and f32 captured tensor given as a
tensor with requires_grad (DSL.md "Backward"). Masks and select choices
are constants of the backward.

- Params are Python numbers, or tensors of one element (0-d or [1], any
  float dtype) when they are to get a gradient; the gradient has the
  tensor's shape and dtype. i32 params and non-f32 tensors have no
  gradient: requires_grad on them is an attnrt.Error naming them.
- Captured tensors are torch tensors (f32 for a gradient).
- q, k, v and captured tensors are made contiguous where they are not
  (a copy); so is the incoming gradient of o.
- For gradients the kernel must be compiled with --backward, and, for
  normalizers with a row sum (softmax and softplus: kernel.info["row_sum"];
  their backward reads the forward's log-sum-exp), with --lse; forward()
  says so, naming the kernel, when a gradient is needed and it was not.
  Without requires_grad (or under torch.no_grad()) any kernel runs.
- CPU kernels take CPU tensors. GPU kernels take CUDA tensors and run
  forward and backward on torch's current stream (the backward on the
  stream autograd runs it on), or CPU tensors (staged copies: attnc's GPU
  simulator); their backward computes the gradients of q, k and v (of
  params and captured tensors where the target's backward has them, else
  attnrt.Error names the argument).
- The backward is deterministic (same inputs, same bits) and is not
  itself differentiable (no double backward).

Written against the API that PyTorch 1.13 (Debian's python3-torch) and 2.x
share: torch.autograd.Function with ctx.save_for_backward.
"""
import numbers

import torch
from torch.autograd.function import once_differentiable

import attnrt

__all__ = ["AttentionFunction", "attention"]


def _needs_lse(kernel):
    """Whether the kernel's normalizer has a row sum, so its backward reads
    the forward's lse: the kernel info's row_sum, from attnrt's normalizer
    table (runtime/support/Normalizers.h)."""
    return bool(kernel.info["row_sum"])


def _kinds(kernel):
    """{name: ("param" | "tensor", dtype)} of the kernel's arguments."""
    kinds = {p["name"]: ("param", p["type"])
             for p in kernel.info.get("params", [])}
    for c in kernel.info.get("captures", []):
        kinds[c["name"]] = ("tensor", c.get("dtype", "f32"))
    return kinds


class AttentionFunction(torch.autograd.Function):
    """forward(ctx, kernel, names, q, k, v, *values) -> o.

    names[i] is the param or captured tensor that values[i] gives; use
    attention() rather than apply() directly (it checks up front that the
    gradients asked for can be computed, naming what is missing)."""

    @staticmethod
    def forward(ctx, kernel, names, q, k, v, *values):
        kinds = _kinds(kernel)
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        args = {}
        for name, value in zip(names, values):
            kind, dtype = kinds.get(name, ("", ""))
            if kind == "param" and isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    raise attnrt.Error(
                        "%s: a param given as a tensor has one element (0-d "
                        "or [1]), got shape %s" % (name, list(value.shape)),
                        name)
                value = (int(value.item()) if dtype == "i32"
                         else float(value.item()))
            elif isinstance(value, torch.Tensor):
                value = value.detach().contiguous()
            args[name] = value
        result = kernel(q, k, v, **args)
        o, lse = result if kernel.info["lse"] else (result, None)
        if not _needs_lse(kernel):
            lse = None  # the backward of sigmoid, relu, relu2 takes none
        tensor_names = [n for n, a in args.items()
                        if isinstance(a, torch.Tensor)]
        ctx.kernel = kernel
        ctx.names = tuple(names)
        ctx.shapes = [tuple(x.shape) if isinstance(x, torch.Tensor) else None
                      for x in values]
        ctx.dtypes = [x.dtype if isinstance(x, torch.Tensor) else None
                      for x in values]
        ctx.scalars = {n: a for n, a in args.items()
                       if not isinstance(a, torch.Tensor)}
        ctx.tensor_names = tensor_names
        ctx.has_lse = lse is not None
        saved = [q, k, v, o] + ([lse] if lse is not None else [])
        ctx.save_for_backward(*(saved + [args[n] for n in tensor_names]))
        return o

    @staticmethod
    @once_differentiable
    def backward(ctx, do):
        kernel = ctx.kernel
        saved = list(ctx.saved_tensors)
        q, k, v, o = saved[:4]
        lse = saved[4] if ctx.has_lse else None
        tensors = saved[5 if ctx.has_lse else 4:]
        args = dict(ctx.scalars)
        args.update(zip(ctx.tensor_names, tensors))
        needs = ctx.needs_input_grad
        grads = [n for i, n in enumerate(ctx.names) if needs[5 + i]]
        # The incoming gradient is often an expanded view (o.sum()): the
        # kernel reads a dense do of o's dtype.
        do = do.to(dtype=o.dtype).contiguous()
        dq, dk, dv, named = kernel.backward(q, k, v, o, lse, do,
                                            grads=grads, **args)
        out = [None, None, dq if needs[2] else None,
               dk if needs[3] else None, dv if needs[4] else None]
        for i, name in enumerate(ctx.names):
            if not needs[5 + i]:
                out.append(None)
                continue
            out.append(named[name].reshape(ctx.shapes[i]).to(ctx.dtypes[i]))
        return tuple(out)


def _check_differentiable(kernel, names, values, wants):
    """Raises attnrt.Error when the gradients asked for cannot be had."""
    info = kernel.info
    name = info.get("name", "")
    if not info.get("backward"):
        raise attnrt.Error(
            "kernel '%s' (%s) was compiled without its backward; compile "
            "it with attnc compile --backward for gradients, or run it "
            "under torch.no_grad() or on inputs without requires_grad"
            % (name, info.get("target", "cpu")), "kernel")
    if _needs_lse(kernel) and not info.get("lse"):
        raise attnrt.Error(
            "kernel '%s' (normalize = %s) was compiled without --lse; its "
            "backward reads the forward's lse: compile it with --lse "
            "--backward for gradients"
            % (name, info.get("normalize", "softmax")), "kernel")
    kinds = _kinds(kernel)
    for arg, value, want in zip(names, values, wants):
        if not want:
            continue
        kind, dtype = kinds.get(arg, ("", ""))
        if kind == "param" and dtype != "f32":
            raise attnrt.Error(
                "%s: is an %s param: it has no gradient (gradients exist "
                "for f32 params and f32 tensors); pass it without "
                "requires_grad" % (arg, dtype), arg)
        if kind == "tensor" and dtype != "f32":
            raise attnrt.Error(
                "%s: is a %s tensor: it has no gradient (gradients exist "
                "for f32 params and f32 tensors); pass it without "
                "requires_grad" % (arg, dtype), arg)


def attention(kernel, q, k, v, **params_and_tensors):
    """o of `kernel` (an attnrt.Kernel) on torch tensors q [B, Hq, Sq, D],
    k [B, Hkv, Skv, D], v [B, Hkv, Skv, Dv], with the variant's params
    (numbers, or one-element tensors to differentiate) and captured tensors
    by name; differentiable with respect to q, k, v and the f32 params and
    tensors that require grad (see the module's docstring)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise attnrt.Error("%s: expected a torch tensor, got %s"
                               % (name, type(t).__name__), name)
    for name, value in params_and_tensors.items():
        if not isinstance(value, (torch.Tensor, numbers.Number)):
            raise attnrt.Error("%s: expected a number or a torch tensor, got "
                               "%s" % (name, type(value).__name__), name)
    names = tuple(params_and_tensors)
    values = tuple(params_and_tensors.values())
    # What autograd will differentiate (ctx.needs_input_grad in forward
    # ignores torch.no_grad()): say now when that cannot be done.
    wants = [isinstance(x, torch.Tensor) and x.requires_grad for x in values]
    if torch.is_grad_enabled() and (
            any(t.requires_grad for t in (q, k, v)) or any(wants)):
        _check_differentiable(kernel, names, values, wants)
    return AttentionFunction.apply(kernel, names, q, k, v, *values)
