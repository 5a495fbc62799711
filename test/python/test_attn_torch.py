"""attn_torch.py: catalog variants' gradients through torch.autograd.

Usage: test_attn_torch.py ATTNC EXAMPLES_DIR WORK_DIR (ATTNRT_LIB set).
Exits 77 (skipped) when torch is not importable (Debian: python3-torch).

Each variant is compiled with `attnc compile --backward` (and --lse for
softmax and softplus) and checked three ways:
- against a float64 PyTorch implementation of the same variant,
  differentiated by autograd: every gradient within 2e-4 * (1 + max|ref|)
  (f32 kernels on unit-normal inputs show ~1e-6);
- torch.autograd.gradcheck on tiny shapes, in f32 (the kernels take
  f32/f16/bf16 only): eps 1e-3, atol 1e-2, rtol 1e-2, which covers the f32
  rounding of the central differences (~1e-7 / 1e-3) with a wide margin;
- determinism: a second backward gives identical bits.
"""
import math
import os
import subprocess
import sys
import warnings

try:
    import torch
except ImportError as e:
    print("SKIP: torch is not importable (%s); install python3-torch" % e)
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "python"))
import attnrt  # noqa: E402
import attn_torch  # noqa: E402

attnc, examples, work = sys.argv[1:4]
os.makedirs(work, exist_ok=True)
torch.manual_seed(0)
print("torch", torch.__version__)
D = 16


def compile_kernel(source, variant, *flags):
    """A CPU kernel of `source` (an examples/ file name or the text of a
    variant), compiled with the flags."""
    if source.endswith(".attn"):
        path = os.path.join(examples, source)
    else:
        path = os.path.join(work, variant + ".attn")
        with open(path, "w") as f:
            f.write(source)
    out = os.path.join(work, "%s%s" % (variant, "".join(
        f.replace("-", "_") for f in flags)))
    subprocess.run([attnc, "compile", path, "--head-dim", str(D), *flags,
                    "-o", out], check=True)
    return attnrt.load(out + ".attnpkg").kernel(variant)


def reference(q, k, v, score=None, mask=None, normalize="softmax",
              sink=None):
    """o in float64: score(s, h, qi, ki) on the scaled s, mask(qi, ki),
    sink [Hq] joins the softmax denominator; q, k, v [B, H, S, D]."""
    Hq, Hkv = q.shape[1], k.shape[1]
    k = k.repeat_interleave(Hq // Hkv, dim=1)
    v = v.repeat_interleave(Hq // Hkv, dim=1)
    Sq, Skv = q.shape[2], k.shape[2]
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    h = torch.arange(Hq, dtype=torch.float64)[:, None, None]
    qi = torch.arange(Sq, dtype=torch.float64)[:, None]
    ki = torch.arange(Skv, dtype=torch.float64)[None, :]
    if score is not None:
        s = score(s, h, qi, ki)
    keep = (torch.ones(Sq, Skv, dtype=torch.bool) if mask is None
            else mask(qi, ki, Sq, Skv))
    if normalize == "softmax":
        s = s.masked_fill(~keep, float("-inf"))
        if sink is not None:
            sinks = sink[None, :, None, None].expand(
                s.shape[0], -1, Sq, 1)
            p = torch.softmax(torch.cat([s, sinks], -1), -1)[..., :-1]
        else:
            p = torch.softmax(s, -1)
    elif normalize == "softplus":
        e = torch.nn.functional.softplus(s) * keep
        p = e / e.sum(-1, keepdim=True)
    elif normalize == "sigmoid":
        p = torch.sigmoid(s) * keep
    else:
        raise ValueError(normalize)
    return p @ v


def causal(qi, ki, Sq, Skv):
    return ki <= qi + (Skv - Sq)


def inputs(B, Hq, Hkv, Sq, Skv, dtype=torch.float32):
    return [torch.randn(*shape, dtype=dtype)
            for shape in ((B, Hq, Sq, D), (B, Hkv, Skv, D),
                          (B, Hkv, Skv, D))]


def check_against_reference(label, kernel, shape, ref_kwargs, extra=None,
                            ref_extra=None):
    """Runs attention() and the float64 reference on the same inputs with
    every gradient, compares; `extra` maps names to kernel arguments (leaf
    tensors get gradients), `ref_extra(values64)` gives the reference's
    keyword arguments from their float64 copies."""
    extra = extra or {}
    q, k, v = [x.requires_grad_() for x in inputs(*shape)]
    extra = {n: (x.detach().clone().requires_grad_(x.requires_grad)
                 if isinstance(x, torch.Tensor) else x)
             for n, x in extra.items()}
    o = attn_torch.attention(kernel, q, k, v, **extra)
    do = torch.randn_like(o)
    o.backward(do)
    q64, k64, v64 = [x.detach().double().requires_grad_() for x in (q, k, v)]
    extra64 = {n: (x.detach().double().requires_grad_(x.requires_grad)
                   if isinstance(x, torch.Tensor) else x)
               for n, x in extra.items()}
    kwargs = dict(ref_kwargs)
    if ref_extra:
        kwargs.update(ref_extra(extra64))
    o64 = reference(q64, k64, v64, **kwargs)
    o64.backward(do.double())
    err = (o.detach().double() - o64.detach()).abs().max().item()
    assert err < 2e-4 * (1 + o64.abs().max().item()), (label, "o", err)
    report = ["o %.1e" % err]
    pairs = [("dq", q, q64), ("dk", k, k64), ("dv", v, v64)]
    pairs += [("d" + n, x, extra64[n]) for n, x in extra.items()
              if isinstance(x, torch.Tensor) and x.requires_grad]
    for name, x, x64 in pairs:
        assert x.grad is not None and x.grad.dtype == x.dtype, (label, name)
        assert x.grad.shape == x.shape, (label, name, x.grad.shape)
        ref = x64.grad
        err = (x.grad.double() - ref).abs().max().item()
        report.append("%s %.1e" % (name, err))
        assert err < 2e-4 * (1 + ref.abs().max().item()), (
            label, name, err, ref.abs().max().item())
    print("%-24s max |x - ref|: %s" % (label, ", ".join(report)))


def check_gradcheck(label, kernel, shape, extra=None):
    extra = extra or {}
    q, k, v = [x.requires_grad_() for x in inputs(*shape)]
    names = list(extra)

    def fn(q, k, v, *values):
        return attn_torch.attention(kernel, q, k, v,
                                    **dict(zip(names, values)))

    with warnings.catch_warnings():
        # gradcheck asks for float64; the kernels are f32 (see above).
        warnings.simplefilter("ignore")
        assert torch.autograd.gradcheck(
            fn, (q, k, v, *extra.values()), eps=1e-3, atol=1e-2, rtol=1e-2)
    print("%-24s gradcheck (f32, eps 1e-3, atol/rtol 1e-2) OK" % label)


def check_determinism(label, kernel, shape, extra=None):
    extra = extra or {}
    q, k, v = inputs(*shape)
    grads = []
    do = None
    for _ in range(2):
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        values = {n: (x.detach().clone().requires_grad_(x.requires_grad)
                      if isinstance(x, torch.Tensor) else x)
                  for n, x in extra.items()}
        o = attn_torch.attention(kernel, *leaves, **values)
        do = torch.randn_like(o) if do is None else do
        o.backward(do)
        grads.append([x.grad for x in leaves] + [
            x.grad for x in values.values()
            if isinstance(x, torch.Tensor) and x.requires_grad])
    for a, b in zip(*grads):
        assert torch.equal(a, b), label
    print("%-24s two backward runs: identical bits" % label)


def ref_alibi(s, h, qi, ki):
    Hq = s.shape[1]
    return s - torch.exp2(-8.0 * (h + 1) / Hq) * (qi - ki)


def t5_bucket(qi, ki):
    n = (qi - ki).clamp(min=0)
    far = 16 + torch.trunc(torch.log(n.clamp(min=16) / 16.0)
                           / math.log(8.0) * 16.0)
    return torch.where(n < 16, n, far.clamp(max=31)).long()


# (label, source, variant, compile flags, shape (B, Hq, Hkv, Sq, Skv),
#  reference kwargs, extra kernel args, reference extras)
dense = "variant dense {}\n"
rel = torch.randn(32, 4) * 0.5
lam = torch.rand(4) * 0.5 + 0.45
sink_logit = torch.randn(4)
cases = [
    ("dense", dense, "dense", ["--lse"], (2, 4, 4, 70, 70), {}, None, None),
    ("dense GQA Sq<Skv", dense, "dense", ["--lse"], (1, 4, 2, 20, 70), {},
     None, None),
    ("causal", "causal.attn", "causal", ["--lse"], (2, 4, 2, 70, 70),
     dict(mask=causal), None, None),
    ("causal chunk", "causal.attn", "causal", ["--lse"], (1, 2, 1, 9, 70),
     dict(mask=causal), None, None),
    ("alibi", "alibi.attn", "alibi", ["--lse"], (1, 4, 4, 70, 70),
     dict(score=ref_alibi, mask=causal), None, None),
    ("softcap (f32 param)", "softcap.attn", "softcap", ["--lse"],
     (2, 4, 2, 70, 70), dict(mask=causal),
     dict(cap=torch.tensor(3.0, requires_grad=True)),
     lambda e: dict(score=lambda s, h, qi, ki:
                    e["cap"] * torch.tanh(s / e["cap"]))),
    ("softcap ([1] param)", "softcap.attn", "softcap", ["--lse"],
     (1, 2, 2, 30, 30), dict(mask=causal),
     dict(cap=torch.tensor([2.5], requires_grad=True)),
     lambda e: dict(score=lambda s, h, qi, ki:
                    e["cap"] * torch.tanh(s / e["cap"]))),
    ("t5_bias (f32 tensor)", "t5_bias.attn", "t5_bias", ["--lse"],
     (2, 4, 4, 70, 70), dict(mask=causal),
     dict(rel=rel.clone().requires_grad_()),
     lambda e: dict(score=lambda s, h, qi, ki:
                    s + e["rel"][t5_bucket(qi, ki), :].permute(2, 0, 1))),
    ("decay (f32 tensor)", "decay.attn", "decay", ["--lse"],
     (1, 4, 2, 70, 70), dict(mask=causal),
     dict(lam=lam.clone().requires_grad_()),
     lambda e: dict(score=lambda s, h, qi, ki:
                    s + torch.log(e["lam"])[:, None, None] * (qi - ki))),
    ("learned_sink", "learned_sink.attn", "learned_sink", ["--lse"],
     (2, 4, 4, 70, 70), dict(mask=causal),
     dict(sink_logit=sink_logit.clone().requires_grad_()),
     lambda e: dict(sink=e["sink_logit"])),
    ("sigmoid (no lse)", "sigmoid.attn", "flash_sigmoid", [],
     (2, 4, 2, 70, 70), dict(normalize="sigmoid",
                             score=lambda s, h, qi, ki: s - math.log(70)),
     None, None),
    ("softplus", "softplus.attn", "softplus_attn", ["--lse"],
     (1, 4, 4, 70, 70), dict(normalize="softplus", mask=causal,
                             score=lambda s, h, qi, ki:
                             torch.log(qi + 2) * s), None, None),
]
kernels = {}
for label, source, variant, flags, shape, ref_kw, extra, ref_extra in cases:
    key = (variant, tuple(flags))
    if key not in kernels:
        kernels[key] = compile_kernel(source, variant, "--backward", *flags)
    kernel = kernels[key]
    check_against_reference(label, kernel, shape, ref_kw, extra, ref_extra)

# bf16 kernels: gradients in bf16 (q's, k's and v's dtype), within bf16
# rounding of the float64 reference.
bf16 = compile_kernel("causal.attn", "causal", "--backward", "--lse",
                      "--dtype", "bf16")
q, k, v = [x.to(torch.bfloat16).requires_grad_()
           for x in inputs(1, 4, 2, 70, 70)]
o = attn_torch.attention(bf16, q, k, v)
do = torch.randn(o.shape).to(o.dtype)
o.backward(do)
leaves64 = [x.detach().double().requires_grad_() for x in (q, k, v)]
reference(*leaves64, mask=causal).backward(do.double())
for name, x, x64 in zip(("dq", "dk", "dv"), (q, k, v), leaves64):
    assert x.grad.dtype == torch.bfloat16, x.grad.dtype
    rel_l1 = ((x.grad.double() - x64.grad).abs().sum()
              / x64.grad.abs().sum()).item()
    assert rel_l1 < 2e-2, (name, rel_l1)
    print("bf16 causal              %s rel-L1 %.1e" % (name, rel_l1))

# gradcheck on tiny shapes (each input element costs two forward runs).
tiny = (1, 2, 1, 5, 7)
check_gradcheck("dense", kernels[("dense", ("--lse",))], tiny)
check_gradcheck("softcap (f32 param)", kernels[("softcap", ("--lse",))],
                tiny, dict(cap=torch.tensor(2.0, requires_grad=True)))
check_gradcheck("t5_bias (f32 tensor)", kernels[("t5_bias", ("--lse",))],
                (1, 2, 2, 6, 6),
                dict(rel=(torch.randn(32, 2) * 0.5).requires_grad_()))
check_gradcheck("sigmoid", kernels[("flash_sigmoid", ())], tiny)

# Determinism: the same inputs give the same gradient bits (the runtime
# sums param/tensor gradients in a fixed order for any thread count).
check_determinism("t5_bias", kernels[("t5_bias", ("--lse",))],
                  (2, 4, 2, 130, 130), dict(rel=rel.clone().requires_grad_()))
check_determinism("softcap", kernels[("softcap", ("--lse",))],
                  (1, 4, 4, 130, 130),
                  dict(cap=torch.tensor(4.0, requires_grad=True)))

# ... and for any thread count: the same backward in processes with 1 and
# 3 runtime threads (ATTN_NUM_THREADS) gives this process's bits.
t5 = kernels[("t5_bias", ("--lse",))]
probe = os.path.join(work, "probe.pt")
q, k, v = inputs(2, 4, 2, 130, 130)
torch.save(dict(q=q, k=k, v=v, rel=rel, do=torch.randn_like(q)), probe)
script = """
import sys, torch
sys.path.insert(0, %r)
import attnrt, attn_torch
kernel = attnrt.load(%r).kernel("t5_bias")
t = torch.load(%r)
leaves = [t[n].requires_grad_() for n in ("q", "k", "v", "rel")]
o = attn_torch.attention(kernel, *leaves[:3], rel=leaves[3])
o.backward(t["do"])
torch.save([x.grad for x in leaves], sys.argv[1])
""" % (os.path.dirname(attn_torch.__file__),
       os.path.join(work, "t5_bias__backward__lse.attnpkg"), probe)
results = []
for threads in ("1", "3", ""):
    out = os.path.join(work, "grads%s.pt" % threads)
    env = dict(os.environ, ATTN_NUM_THREADS=threads)
    if not threads:
        del env["ATTN_NUM_THREADS"]
    subprocess.run([sys.executable, "-c", script, out], env=env, check=True)
    results.append(torch.load(out))
for other in results[1:]:
    for a, b in zip(results[0], other):
        assert torch.equal(a, b)
print("t5_bias                  1, 3 and default threads: identical bits")

# Gradients only where asked: a param without requires_grad, k frozen.
softcap = kernels[("softcap", ("--lse",))]
q, k, v = inputs(1, 2, 2, 10, 10)
q.requires_grad_()
o = attn_torch.attention(softcap, q, k, v, cap=torch.tensor(3.0))
o.sum().backward()  # an expanded (stride 0) incoming gradient
assert q.grad is not None and k.grad is None
# Non-contiguous inputs (a transposed view) are copied.
qt = torch.randn(1, 10, 2, D).transpose(1, 2).requires_grad_()
o = attn_torch.attention(softcap, qt, k, v, cap=3.0)
o.sum().backward()
assert qt.grad.shape == (1, 2, 10, D)
# Under no_grad any kernel runs, without backward or lse.
plain = compile_kernel("causal.attn", "causal")
with torch.no_grad():
    o = attn_torch.attention(plain, q, k, v)
assert o.shape == (1, 2, 10, D)


def expect_error(fn, argument, *fragments):
    try:
        fn()
    except attnrt.Error as e:
        assert e.argument == argument, (argument, e.argument, str(e))
        for fragment in fragments:
            assert fragment in str(e), (fragment, str(e))
        print("error as expected: %s" % e)
        return
    raise AssertionError("expected an attnrt.Error naming " + argument)


# No backward entry, no lse for a softmax backward, a gradient of an i32
# param, a param tensor of more than one element.
qg = q.detach().clone().requires_grad_()
expect_error(lambda: attn_torch.attention(plain, qg, k, v), "kernel",
             "--backward")
no_lse = compile_kernel("causal.attn", "causal", "--backward")
expect_error(lambda: attn_torch.attention(no_lse, qg, k, v), "kernel",
             "--lse")
sliding = compile_kernel("sliding_sink.attn", "sliding_sink", "--backward",
                         "--lse")
expect_error(lambda: attn_torch.attention(
    sliding, qg, k, v, window=torch.tensor(4.0, requires_grad=True)),
    "window", "i32 param")
expect_error(lambda: attn_torch.attention(
    softcap, qg, k, v, cap=torch.ones(2, requires_grad=True)), "cap",
    "one element")
# A GPU kernel: forward only. Here it runs on attnc's functional simulator
# on host tensors (staged copies); a CUDA build of torch would give it CUDA
# tensors. Skipped where attnc cannot find ptxas.
gpu_out = os.path.join(work, "causal_sm80")
built = subprocess.run([attnc, "compile", os.path.join(examples, "causal.attn"),
                        "--target", "sm_80", "--head-dim", str(D),
                        "-o", gpu_out], capture_output=True, text=True)
sim = os.path.join(os.path.dirname(attnc), "..", "lib", "libattnsim_cuda.so")
if built.returncode == 0 and os.path.exists(sim):
    gk = attnrt.load(gpu_out + ".attnpkg").kernel("causal")
    qb, kb, vb = [x.to(torch.bfloat16) for x in inputs(1, 2, 1, 20, 20)]
    attnrt.use_gpu_simulator(sim)
    with torch.no_grad():
        og = attn_torch.attention(gk, qb, kb, vb)
    attnrt.use_gpu_simulator(None)
    ref = reference(*(x.double() for x in (qb, kb, vb)), mask=causal)
    err = (og.double() - ref).abs().max().item()
    print("simulated sm_80 forward  max |o - ref| = %.1e" % err)
    assert err < 3e-2, err
    expect_error(lambda: attn_torch.attention(
        gk, qb.clone().requires_grad_(), kb, vb), "kernel", "sm_80",
        "--backward")
    # Compiled --backward --lse: autograd through the simulated sm_80
    # backward (Kernel.backward on host tensors: staged copies).
    bwd_out = gpu_out + "_bwd"
    built = subprocess.run([attnc, "compile",
                            os.path.join(examples, "causal.attn"),
                            "--target", "sm_80", "--head-dim", str(D),
                            "--backward", "--lse", "-o", bwd_out],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    gb = attnrt.load(bwd_out + ".attnpkg").kernel("causal")
    qb, kb, vb = [x.to(torch.bfloat16).requires_grad_()
                  for x in inputs(1, 2, 1, 20, 20)]
    attnrt.use_gpu_simulator(sim)
    try:
        og = attn_torch.attention(gb, qb, kb, vb)
        dog = torch.randn(og.shape).to(torch.bfloat16)
        og.backward(dog)
    finally:
        attnrt.use_gpu_simulator(None)
    q64, k64, v64 = [x.detach().double().requires_grad_()
                     for x in (qb, kb, vb)]
    o64 = reference(q64, k64, v64, mask=causal)
    o64.backward(dog.double())
    report = []
    for name, x, x64 in (("dq", qb, q64), ("dk", kb, k64), ("dv", vb, v64)):
        assert x.grad is not None and x.grad.dtype == torch.bfloat16, name
        err = (x.grad.double() - x64.grad).abs().max().item()
        report.append("%s %.1e" % (name, err))
        assert err < 3e-2 * (1 + x64.grad.abs().max().item()), (name, err)
    print("simulated sm_80 backward max |x - ref|: " + ", ".join(report))
else:
    print("GPU kernel check skipped: " + (built.stderr.strip() or
                                          "no simulator"))
# The same through Kernel.backward on torch tensors.
o, lse = sliding(q.detach(), k, v, window=4)
expect_error(lambda: sliding.backward(q.detach(), k, v, o, lse,
                                      torch.ones_like(o), grads=["window"],
                                      window=4), "window", "i32 param")
dq, dk, dv, named = softcap.backward(
    q.detach(), k, v, *softcap(q.detach(), k, v, cap=3.0),
    torch.ones(1, 2, 10, D), grads=["cap"], cap=3.0)
assert isinstance(dq, torch.Tensor) and named["cap"].shape == (1,)
print("attn_torch.py OK")
