#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Generate tests/golden/golden.txt: reference trajectories from torch.optim.

Every case runs one torch optimizer (single-tensor path, foreach=False) on one
param group holding three tensors t = 0, 1, 2 of shapes [5], [2, 3], [2, 1, 2].
Values are computed in double precision from the row-major flat index i and then
rounded once to the case dtype (float32 or float64):

    p0[t][i]   = (((i + 17*t) * 37 + 11) % 101) / 50.0 - 1.0
    g[k][t][i] = ((((i + 17*t) * 53 + k*29 + 7) % 97) / 48.0 - 1.0) * 0.5

For k = 1..4 (1..8 for RAdam, whose rectified step starts at step 7 with the default beta2):
p.grad = g[k][t] (fresh tensor), then opt.step(). The clipped cases (last in the file) call
torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type, foreach=False) just before each step.
LAMB and LARS (after them) come from optax.lamb and optax.lars (pip install optax jax; CPU,
jax_enable_x64 so that float64 cases run in float64), their state named as shardopt names it
(mu, nu: exp_avg, exp_avg_sq; trace: momentum_buffer).

Output format (one item per line, tokens separated by single spaces):

    # header comment
    case <Algo> <dtype> <key>=<value> ...   (floats as Python repr, bools as 0/1)
    clip <max_norm> <norm_type>             (clipped cases: clip_grad_norm_ before every step)
    norm <k> <hex>                          (clipped cases: the total norm it returned at step k)
    param <k> <t> <hex> ...                 (parameter t after step k; k=1..steps, t=0..2)
    state <slot> <t> <hex> ...              (state tensors after the last step, slots sorted by name)
    scalar <key> <t> <hex>                  (per-tensor scalar state, e.g. NAdam's mu_product, as float64)
    step <t> <n>                            (only for algorithms keeping state['step'])
    end

<hex> is the element's IEEE-754 bit pattern in lowercase hex, 8 digits for
float32 and 16 for float64.

For host-independent output the script pins ATEN_CPU_CAPABILITY=default (torch's
AVX2/AVX512 kernels contract a + b*c into FMAs; the default build does not) and
MKL_CBWR=COMPATIBLE (torch's CPU sqrt comes from MKL, whose results otherwise
depend on the CPU). MKL's sqrt is not always correctly rounded (1 ulp off), so
sqrt-based optimizers can only be matched to within a few ulps.

Usage: python3 scripts/make_golden.py [output_path]
"""
import inspect
import itertools
import math
import os
import sys

os.environ["ATEN_CPU_CAPABILITY"] = "default"  # must be set before torch is imported
os.environ["MKL_CBWR"] = "COMPATIBLE"
import torch  # noqa: E402

SHAPES = [(5,), (2, 3), (2, 1, 2)]
STEPS = 4
DTYPES = [("float32", torch.float32), ("float64", torch.float64)]


def make_tensor(t, dtype, value_of_index):
    vals = [value_of_index(i + 17 * t) for i in range(math.prod(SHAPES[t]))]
    return torch.tensor(vals, dtype=torch.float64).to(dtype).reshape(SHAPES[t])


def initial_param(t, dtype):
    return make_tensor(t, dtype, lambda j: ((j * 37 + 11) % 101) / 50.0 - 1.0)


def gradient(k, t, dtype):
    return make_tensor(t, dtype, lambda j: (((j * 53 + k * 29 + 7) % 97) / 48.0 - 1.0) * 0.5)


def hex_tokens(tensor):
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.dtype == torch.float32:
        bits, width, mask = flat.view(torch.int32), 8, 0xFFFFFFFF
    else:
        bits, width, mask = flat.view(torch.int64), 16, 0xFFFFFFFFFFFFFFFF
    return " ".join(format(int(b) & mask, "0%dx" % width) for b in bits.tolist())


def grid(**axes):
    """Cartesian product of the axes, as dicts (keyword order = nesting order)."""
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*axes.values())]


def sgd_cases():
    out = []
    for momentum in (0.0, 0.9):
        for dampening in ((0.0, 0.3) if momentum > 0 else (0.0,)):
            for nesterov in ((False, True) if momentum > 0 and dampening == 0 else (False,)):
                for rest in grid(weight_decay=(0.0, 0.1), maximize=(False, True)):
                    out.append(dict(lr=0.1, momentum=momentum, dampening=dampening,
                                    nesterov=nesterov, **rest))
    return out


# (torch class, option dicts, option keys written to the file in this order)
ALGOS = [
    (torch.optim.SGD, sgd_cases(),
     ["lr", "momentum", "dampening", "nesterov", "weight_decay", "maximize"]),
    (torch.optim.Adagrad,
     [dict(lr=0.1, **g) for g in grid(lr_decay=(0.0, 0.05), weight_decay=(0.0, 0.1),
                                      initial_accumulator_value=(0.0, 0.2),
                                      maximize=(False, True))],
     ["lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps", "maximize"]),
] + [
    (cls, [dict(lr=0.05, **g) for g in grid(amsgrad=(False, True), maximize=(False, True),
                                            weight_decay=(0.0, 0.1))],
     ["lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad", "maximize"])
    for cls in (torch.optim.Adam, torch.optim.AdamW)
] + [
    (torch.optim.RMSprop,
     [dict(lr=0.01, **g) for g in grid(centered=(False, True), momentum=(0.0, 0.9),
                                       weight_decay=(0.0, 0.1), maximize=(False, True))],
     ["lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"]),
    # betas[0] = 0.3: torch's lerp takes its second branch (weight 1 - beta1 >= 0.5)
    (torch.optim.Adamax,
     [dict(lr=0.05, betas=b, **g) for b in ((0.9, 0.999), (0.3, 0.9))
      for g in grid(weight_decay=(0.0, 0.1), maximize=(False, True))],
     ["lr", "beta1", "beta2", "eps", "weight_decay", "maximize"]),
    # betas[1] = 0.99 and 0.999: rho_t > 5 from step 7; betas[1] = 0.5: never (rho_inf = 3)
    (torch.optim.RAdam,
     [dict(lr=0.05, betas=(0.9, b2), **g) for b2 in (0.999, 0.5)
      for g in grid(weight_decay=(0.0, 0.1), decoupled_weight_decay=(False, True),
                    maximize=(False, True))] + [dict(lr=0.05, betas=(0.5, 0.99))],
     ["lr", "beta1", "beta2", "eps", "weight_decay", "decoupled_weight_decay", "maximize"], 8),
    # momentum_decay = 0.3: mu changes visibly from step to step; betas[0] = 0.3: the second lerp branch
    (torch.optim.NAdam,
     [dict(lr=0.05, **g) for g in grid(weight_decay=(0.0, 0.1), decoupled_weight_decay=(False, True),
                                       maximize=(False, True))]
     + [dict(lr=0.05, betas=(0.3, 0.9), momentum_decay=0.3)],
     ["lr", "beta1", "beta2", "eps", "weight_decay", "momentum_decay", "decoupled_weight_decay",
      "maximize"]),
]


def fmt_option(value):
    if isinstance(value, bool):
        return str(int(value))
    return repr(float(value))


def run_case(cls, options, keys, dtype_name, dtype, steps, clip=None):
    params = [initial_param(t, dtype).requires_grad_(True) for t in range(len(SHAPES))]
    kwargs = dict(options, foreach=False)
    if "fused" in inspect.signature(cls).parameters:
        kwargs["fused"] = False
    opt = cls(params, **kwargs)
    group = opt.param_groups[0]
    if "betas" in group:
        group_view = dict(group, beta1=group["betas"][0], beta2=group["betas"][1])
    else:
        group_view = group
    lines = ["case %s %s %s" % (cls.__name__, dtype_name,
                                " ".join("%s=%s" % (k, fmt_option(group_view[k])) for k in keys))]
    if clip:
        lines.append("clip %r %r" % clip)
    with torch.no_grad():
        for k in range(1, steps + 1):
            for t, p in enumerate(params):
                p.grad = gradient(k, t, dtype)
            if clip:
                norm = torch.nn.utils.clip_grad_norm_(params, clip[0], clip[1], foreach=False)
                lines.append("norm %d %s" % (k, hex_tokens(norm.reshape(1))))
            opt.step()
            for t, p in enumerate(params):
                lines.append("param %d %d %s" % (k, t, hex_tokens(p)))
    states = [opt.state[p] for p in params]
    for slot in sorted(set().union(*states) - {"step"}):
        for t, p in enumerate(params):
            value = states[t].get(slot)
            if torch.is_tensor(value) and value.shape == p.shape:
                lines.append("state %s %d %s" % (slot, t, hex_tokens(value)))
    # per-tensor scalar state (NAdam's mu_product, a 0-d tensor): its value as float64 bits
    for key in sorted(set().union(*states) - {"step"}):
        for t, s in enumerate(states):
            value = s.get(key)
            if torch.is_tensor(value) and value.dim() == 0:
                lines.append("scalar %s %d %s" % (key, t, hex_tokens(value.to(torch.float64))))
    lines += ["step %d %d" % (t, int(s["step"])) for t, s in enumerate(states) if "step" in s]
    return lines + ["end"]


def optax_cases():
    """(name, optax factory, option dicts, keys, state names) of the optax-defined algorithms."""
    import optax
    lamb = [dict(lr=0.05, beta1=b[0], beta2=b[1], eps=e, weight_decay=w)
            for b in ((0.9, 0.999), (0.5, 0.9)) for e in (1e-6, 0.1) for w in (0.0, 0.1)]
    lars = [dict(lr=0.05, weight_decay=w, trust_coefficient=tc, eps=e, momentum=0.9, nesterov=n)
            for (tc, e) in ((0.001, 0.0), (0.5, 0.1)) for w in (0.0, 0.1) for n in (False, True)]
    return [
        ("LAMB", lambda o: optax.lamb(o["lr"], b1=o["beta1"], b2=o["beta2"], eps=o["eps"],
                                      weight_decay=o["weight_decay"]),
         lamb, ["lr", "beta1", "beta2", "eps", "weight_decay"],
         lambda st: {"exp_avg": st[0].mu, "exp_avg_sq": st[0].nu}),
        ("LARS", lambda o: optax.lars(o["lr"], weight_decay=o["weight_decay"],
                                      trust_coefficient=o["trust_coefficient"], eps=o["eps"],
                                      momentum=o["momentum"], nesterov=o["nesterov"]),
         lars, ["lr", "weight_decay", "trust_coefficient", "eps", "momentum", "nesterov"],
         lambda st: {"momentum_buffer": st[-1].trace}),
    ]


def run_optax_case(name, make, options, keys, state_of, dtype_name, dtype, steps):
    import jax.numpy as jnp
    import numpy as np
    import optax

    def to_jax(t):
        return jnp.asarray(t.numpy())

    def to_torch(a):
        return torch.from_numpy(np.array(a))

    params = [to_jax(initial_param(t, dtype)) for t in range(len(SHAPES))]
    opt = make(options)
    state = opt.init(params)
    lines = ["case %s %s %s" % (name, dtype_name, " ".join("%s=%s" % (k, fmt_option(options[k])) for k in keys))]
    for k in range(1, steps + 1):
        grads = [to_jax(gradient(k, t, dtype)) for t in range(len(SHAPES))]
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        for t, p in enumerate(params):
            lines.append("param %d %d %s" % (k, t, hex_tokens(to_torch(p))))
    for slot, values in sorted(state_of(state).items()):
        for t, v in enumerate(values):
            lines.append("state %s %d %s" % (slot, t, hex_tokens(to_torch(v))))
    return lines + ["end"]


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests", "golden",
                                                                  "golden.txt")
    torch.set_default_dtype(torch.float32)  # keeps state['step'] float32, as by default
    lines = ["# shardopt golden data, generated by scripts/make_golden.py with torch %s;"
             " do not edit" % torch.__version__]
    count = 0
    for cls, option_list, keys, *steps in ALGOS:
        for dtype_name, dtype in DTYPES:
            for options in option_list:
                lines += run_case(cls, options, keys, dtype_name, dtype, steps[0] if steps else STEPS)
                count += 1
    # clip_grad_norm_ (norm 2 and infinity, max_norm below the norms of most steps) before the
    # first five algorithms, with their first and last options (flags off, then on)
    for cls, option_list, keys, *steps in ALGOS[:5]:
        for dtype_name, dtype in DTYPES:
            for options in (option_list[0], option_list[-1]):
                for clip in ((0.5, 2.0), (0.25, math.inf)):
                    lines += run_case(cls, options, keys, dtype_name, dtype, STEPS, clip)
                    count += 1
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    for name, make, option_list, keys, state_of in optax_cases():
        for dtype_name, dtype in DTYPES:
            for options in option_list:
                lines += run_optax_case(name, make, options, keys, state_of, dtype_name, dtype, STEPS)
                count += 1
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %d cases to %s" % (count, out_path))


if __name__ == "__main__":
    main()
