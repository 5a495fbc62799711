"""attnrt.py on numpy: a bundle from `attnc compile` against numpy math.

Usage: test_attnrt.py ATTNC EXAMPLES_DIR WORK_DIR (ATTNRT_LIB set).
"""
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "python"))
import attnrt  # noqa: E402

attnc, examples, work = sys.argv[1:4]
os.makedirs(work, exist_ok=True)
out = os.path.join(work, "sliding")
subprocess.run([attnc, "compile", os.path.join(examples, "sliding_sink.attn"),
                "--head-dim", "32", "--lse", "-o", out], check=True)
mod = attnrt.load(out + ".attnpkg")
assert mod.names() == ["sliding_sink"], mod.names()
kernel = mod.kernel("sliding_sink")
assert kernel.info["head_dim"] == 32
assert [p["name"] for p in kernel.info["params"]] == ["window", "sinks"]
# The normalizer's row-sum property (attnrt's normalizer table), which
# attn_torch asks whether a backward reads the forward's lse.
assert kernel.info["row_sum"] is True, kernel.info
out_relu = os.path.join(work, "relu")
subprocess.run([attnc, "compile", os.path.join(examples, "relu.attn"),
                "--head-dim", "32", "-o", out_relu], check=True)
relu_info = attnrt.load(out_relu + ".attnpkg").kernel("relu_attn").info
assert relu_info["normalize"] == "relu" and relu_info["row_sum"] is False

rng = np.random.default_rng(0)
B, H, S, D = 2, 3, 70, 32
q = rng.standard_normal((B, H, S, D), dtype=np.float32)
k = rng.standard_normal((B, H, S, D), dtype=np.float32)
v = rng.standard_normal((B, H, S, D), dtype=np.float32)
o, lse = kernel(q, k, v, window=9, sinks=2)


def reference(window, sinks):
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64),
                  k.astype(np.float64)) / np.sqrt(D)
    s = 30.0 * np.tanh(s / 30.0)
    qi = np.arange(S)[:, None]
    ki = np.arange(S)[None, :]
    keep = ((ki <= qi) & (qi - ki < window)) | (ki < sinks)
    s = np.where(keep, s, -np.inf)
    m = s.max(-1, keepdims=True)
    p = np.exp(s - m)
    l = p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bhkd->bhqd", p / l, v), (m + np.log(l))[..., 0]


ref_o, ref_lse = reference(9, 2)
err_o = np.abs(o - ref_o).max()
err_lse = np.abs(lse - ref_lse).max()
print("max |o - ref| = %.3e, max |lse - ref| = %.3e" % (err_o, err_lse))
assert err_o < 2e-4 and err_lse < 2e-4

# Non-contiguous views (every other head) work without copies.
o2 = np.zeros((B, H * 2, S, D), dtype=np.float32)[:, ::2]
kernel(q, k, v, o=o2, lse=np.zeros((B, H, S), np.float32), window=9,
       sinks=2)
assert np.abs(o2 - ref_o).max() < 2e-4

# A bad launch names the argument and writes nothing.
sentinel = np.full((B, H, S, D), 7.0, dtype=np.float32)
try:
    kernel(q, k[:, :, :10], v, o=sentinel, window=9)
    raise AssertionError("expected an error")
except attnrt.Error as e:
    assert e.argument == "v", (e.argument, str(e))
assert (sentinel == 7.0).all()
try:
    kernel(q, k, v, windw=3)
    raise AssertionError("expected an error")
except attnrt.Error as e:
    assert e.argument == "windw" and "did you mean 'window'" in str(e), e
try:
    attnrt.load(os.path.join(work, "missing.attnpkg"))
    raise AssertionError("expected an error")
except attnrt.Error as e:
    assert e.argument == "bundle"

# Arguments of the wrong kind name themselves (float64 and int64 arrays
# raised with an empty argument, a list raised AttributeError).
for bad, name in ((dict(q=q.astype(np.float64)), "q"),
                  (dict(k=k.astype(np.int64)), "k"),
                  (dict(v=v.tolist()), "v"),
                  (dict(q=q.tolist()), "q")):
    call = dict(q=q, k=k, v=v)
    call.update(bad)
    try:
        kernel(call["q"], call["k"], call["v"], window=9)
        raise AssertionError("expected an error")
    except attnrt.Error as e:
        assert e.argument == name and str(e).startswith(name + ": "), (
            e.argument, str(e))
try:
    kernel(q, k, v, o=np.zeros((B, H, S, D)), window=9)
    raise AssertionError("expected an error")
except attnrt.Error as e:
    assert e.argument == "o" and "astype(np.float32)" in str(e), str(e)
# Byte strides that are not whole elements (they were floored).
odd = np.lib.stride_tricks.as_strided(
    q, shape=(B, H, S - 1, D), strides=q.strides[:2] + (130, 4))
try:
    kernel(odd, k, v, window=9)
    raise AssertionError("expected an error")
except attnrt.Error as e:
    assert e.argument == "q" and "not multiples" in str(e), str(e)
# A file with the bundle magic and nothing else is not an old bundle
# ("format 0; recompile it" before).
junk = os.path.join(work, "junk.attnpkg")
with open(junk, "wb") as f:
    f.write(b"ATTNPKG1" + bytes(64))
try:
    attnrt.load(junk)
    raise AssertionError("expected an error")
except attnrt.Error as e:
    assert e.argument == "bundle", e
    assert "not a valid attnc bundle" in str(e) and "recompile" not in str(e), e

# A paged int8 bundle: codes, scales, page table and lengths from numpy.
out8 = os.path.join(work, "decode8")
subprocess.run([attnc, "compile", os.path.join(examples, "causal.attn"),
                "--head-dim", "32", "--kv-dtype", "int8", "--kv-group", "8",
                "--paged", "4", "-o", out8], check=True)
k8 = attnrt.load(out8 + ".attnpkg").kernel("causal")
assert k8.info["kv_dtype"] == "int8" and k8.info["page_size"] == 4
G, P, Sk = 8, 4, 22
kf = rng.standard_normal((B, H, Sk, D), dtype=np.float32)
vf = rng.standard_normal((B, H, Sk, D), dtype=np.float32)
groups = -(-Sk // G)
pad = groups * G - Sk
kp = np.concatenate([kf, np.zeros((B, H, pad, D), np.float32)], axis=2)
k_scale = np.abs(kp.reshape(B, H, groups, G, D)).max(3) / 127
k_codes = np.rint(kp / np.repeat(k_scale, G, axis=2)).astype(np.int8)[:, :, :Sk]
v_scale = np.abs(vf).max(-1) / 127
v_codes = np.rint(vf / v_scale[..., None]).astype(np.int8)
pages_per = -(-Sk // P)
order = rng.permutation(B * pages_per).astype(np.int32)
table = order.reshape(B, pages_per)
k_pool = np.zeros((B * pages_per, H, P, D), np.int8)
v_pool = np.zeros_like(k_pool)
for b in range(B):
    for s in range(Sk):
        k_pool[table[b, s // P], :, s % P] = k_codes[b, :, s]
        v_pool[table[b, s // P], :, s % P] = v_codes[b, :, s]
cap = pages_per * P
cap_groups = -(-cap // G)
ks = np.zeros((B, H, cap_groups, D), np.float32)
ks[:, :, :groups] = k_scale
vs = np.zeros((B, H, cap), np.float32)
vs[:, :, :Sk] = v_scale
q1 = q[:, :, :3]
o8 = k8(q1, k_pool, v_pool, k_scale=ks, v_scale=vs, page_table=table,
        seq_lens=np.full((B,), Sk, np.int32))
s8 = np.einsum("bhqd,bhkd->bhqk", q1.astype(np.float64),
               kf.astype(np.float64)) / np.sqrt(D)
keep8 = np.arange(Sk)[None, :] <= np.arange(3)[:, None] + (Sk - 3)
s8 = np.where(keep8, s8, -np.inf)
p8 = np.exp(s8 - s8.max(-1, keepdims=True))
ref8 = np.einsum("bhqk,bhkd->bhqd", p8 / p8.sum(-1, keepdims=True), vf)
rel = np.abs(o8 - ref8).sum() / np.abs(ref8).sum()
print("paged int8 rel-L1 = %.3e" % rel)
assert rel < 1.5e-2, rel
try:
    k8(q1, k_pool, v_pool, k_scale=ks, v_scale=vs, page_table=table + 100,
       seq_lens=np.full((B,), Sk, np.int32))
    raise AssertionError("expected an error")
except attnrt.Error as e:
    assert e.argument == "page_table", e
# numpy scalars are params too.
o3 = kernel(q, k, v, window=np.int32(9), sinks=np.int64(2))[0]
assert np.abs(o3 - ref_o).max() < 2e-4

# Backward on numpy (Kernel.backward): sliding_sink compiled --backward
# --lse against the float64 gradients of sum(o * do) derived by hand.
outb = os.path.join(work, "sliding_bwd")
subprocess.run([attnc, "compile", os.path.join(examples, "sliding_sink.attn"),
                "--head-dim", "32", "--lse", "--backward", "-o", outb],
               check=True)
kb = attnrt.load(outb + ".attnpkg").kernel("sliding_sink")
assert kb.info["backward"] is True, kb.info
ob, lseb = kb(q, k, v, window=9, sinks=2)
do = rng.standard_normal((B, H, S, D), dtype=np.float32)
dq, dk, dv, named = kb.backward(q, k, v, ob, lseb, do, window=9, sinks=2)
assert named == {} and dq.shape == q.shape and dq.dtype == np.float32
assert dk.shape == k.shape and dv.shape == v.shape


def reference_backward(window, sinks):
    q64, k64, v64 = (x.astype(np.float64) for x in (q, k, v))
    do64 = do.astype(np.float64)
    t = np.einsum("bhqd,bhkd->bhqk", q64, k64) / np.sqrt(D)
    u = 30.0 * np.tanh(t / 30.0)
    qi = np.arange(S)[:, None]
    ki = np.arange(S)[None, :]
    keep = ((ki <= qi) & (qi - ki < window)) | (ki < sinks)
    u = np.where(keep, u, -np.inf)
    p = np.exp(u - u.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o64 = np.einsum("bhqk,bhkd->bhqd", p, v64)
    dv_ref = np.einsum("bhqk,bhqd->bhkd", p, do64)
    dp = np.einsum("bhqd,bhkd->bhqk", do64, v64)
    du = p * (dp - (do64 * o64).sum(-1, keepdims=True))
    dt = du * (1.0 - np.tanh(t / 30.0) ** 2) / np.sqrt(D)
    return (np.einsum("bhqk,bhkd->bhqd", dt, k64),
            np.einsum("bhqk,bhqd->bhkd", dt, q64), dv_ref)


for name, got, ref in zip(("dq", "dk", "dv"), (dq, dk, dv),
                          reference_backward(9, 2)):
    err = np.abs(got - ref).max()
    print("backward: max |%s - ref| = %.3e" % (name, err))
    assert err < 2e-4 * (1 + np.abs(ref).max()), (name, err)
# Deterministic: a second run gives the same bits, into given outputs too.
again = kb.backward(q, k, v, ob, lseb, do, dq=np.empty_like(q),
                    window=9, sinks=2)
for a, b in zip(again[:3], (dq, dk, dv)):
    assert a.tobytes() == b.tobytes()
# Errors name the argument (dout for the C ABI's do) and write nothing.
sentinel = np.full_like(q, 7.0)
for call, name in ((dict(dout=do[:, :1]), "dout"),
                   (dict(lse=None), "lse"),
                   (dict(grads=["window"]), "window"),
                   (dict(grads="windw"), "windw"),
                   (dict(dk=np.zeros(k.shape, np.float16)), "dk"),
                   (dict(dout=do.tolist()), "dout")):
    kw = dict(q=q, k=k, v=v, o=ob, lse=lseb, dout=do, dq=sentinel)
    kw.update(call)
    try:
        kb.backward(window=9, sinks=2, **kw)
        raise AssertionError("expected an error for %s" % name)
    except attnrt.Error as e:
        assert e.argument == name and str(e).startswith(name + ":"), (
            name, e.argument, str(e))
        if name == "window":
            assert "i32 param" in str(e), str(e)
assert (sentinel == 7.0).all()
# A kernel compiled without --backward says so.
try:
    kernel.backward(q, k, v, ob, lseb, do, window=9, sinks=2)
    raise AssertionError("expected an error")
except attnrt.Error as e:
    assert "--backward" in str(e), str(e)

# A GPU bundle takes host arrays by copying them to the device: here the
# driver (or the simulator asked for) is what is missing; skipped where
# attnc cannot find ptxas.
gpu_out = os.path.join(work, "sliding_sm80")
built = subprocess.run([attnc, "compile",
                        os.path.join(examples, "sliding_sink.attn"),
                        "--target", "sm_80", "--head-dim", "32",
                        "-o", gpu_out], capture_output=True, text=True)
if built.returncode == 0:
    gk = attnrt.load(gpu_out + ".attnpkg").kernel("sliding_sink")
    assert gk.info["target"] == "sm_80", gk.info
    qb = np.zeros((B, H, S, D), np.uint16)
    try:
        gk(qb, qb[:, :, :, :16], qb, window=9)
        raise AssertionError("expected an error")
    except attnrt.Error as e:
        assert e.argument == "k" and "expected 32" in str(e), e
    missing = os.path.join(work, "no", "libattnsim_cuda.so")
    attnrt.use_gpu_simulator(missing)
    try:
        gk(qb, qb, qb, window=9)
        raise AssertionError("expected an error")
    except attnrt.Error as e:
        assert e.argument == "target" and missing in str(e), e
    attnrt.use_gpu_simulator(None)
    # On attnc's functional simulator (lib/ beside bin/attnc), numpy in and
    # out: bf16 bits (rounded to nearest even) against the f32 reference.
    sim = os.path.join(os.path.dirname(attnc), "..", "lib",
                       "libattnsim_cuda.so")
    if os.path.exists(sim):
        def bf16(x):
            bits = x.view(np.uint32).astype(np.uint64)
            return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(
                np.uint16)
        attnrt.use_gpu_simulator(sim)
        og = gk(bf16(q), bf16(k), bf16(v), window=9, sinks=2)
        attnrt.use_gpu_simulator(None)
        og = (og.astype(np.uint32) << 16).view(np.float32)
        err = np.abs(og - ref_o).max()
        print("simulated sm_80: max |o - ref| = %.3e" % err)
        assert err < 3e-2, err
else:
    assert "ptxas" in built.stderr, built.stderr
    print("GPU bundle check skipped: " + built.stderr.strip())
print("attnrt.py OK")
