#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Checks that shardopt checkpoints and torch.optim state interoperate, in both directions.

For every case (an algorithm, its options and a dtype), with three parameters t0, t1, t2 of
shapes [5], [2, 3], [2, 1, 2] and the input formulas of scripts/make_golden.py:

  (a) shardopt -> torch: the tool (tests/checkpoint_tool.cpp) steps 1..3 and saves a checkpoint.
      The checkpoint must hold what torch itself has after its own steps 1..3. torch loads it
      into torch.optim state and steps 4..6; the tool loads it and steps 4..6; both agree.
  (b) torch -> shardopt: torch steps 1..3 and writes a checkpoint in shardopt's format; the tool
      loads it and steps 4..6; torch continues 4..6; both agree.

16-bit parameters (bfloat16, float16) follow torch's float32-master recipe (see
scripts/make_mixed_golden.py and docs/numerics.md): torch.optim steps float32 master copies whose
gradients are the 16-bit ones widened, and the parameters are the masters rounded. shardopt's
checkpoint holds the masters as state.<param>.master (float32, like the state): (a) torch takes them
as its master copies and goes on; (b) torch writes its masters there and shardopt goes on. The
16-bit parameters must be within one 16-bit ulp of torch's and equal in at least 99% of elements.

After step 6 the tool saves again, and that state is compared with torch's too. Save + load must
lose nothing: the resumed run of (a) gives the bits of an uninterrupted tool run 0..6. Three
cases are then repeated with the tool at 2 MPI ranks (FlatPartition, ChunkRows): every file they
write must be bit-identical to the single-process run's, and both directions hold.

Tolerance as tests/test_golden.cpp: float32 within 8 ulps or |diff| <= 4 eps (torch's CPU sqrt
comes from MKL and is not always correctly rounded; shardopt's is), float64 relative 1e-12.
Step counts, slot sets and options must match exactly.

Usage: torch_interop.py --tool PATH [--workdir DIR] [--mpiexec PATH | --no-mpi] [--verbose]
Exit status: 0 all passed, 1 a failure, 2 usage or tool error, 77 torch or safetensors missing.

The checkpoint format (shardopt's save()/load(), one safetensors file):
  state.<param>.<slot>  F32/F64, the parameter's global shape, torch's state keys as slot names
  state.<param>.step    I64 scalar: steps the parameter took (SGD too; torch has none there)
  state.<param>.<key>   F64 scalar: per-tensor scalar state (NAdam's mu_product; torch: float32 0-d)
  __metadata__: shardopt.format = "1", shardopt.algorithm = "Adam" etc., shardopt.param_groups =
  JSON list of {"options": {...shardopt option names...}, "params": [names]}.
torch keeps state['step'] as a float32 0-d tensor (Adam, AdamW, Adagrad, RMSprop).
"""
import argparse
import inspect
import json
import math
import os
import shutil
import struct
import subprocess
import sys

# Host-independent torch numerics, as scripts/make_golden.py: no FMA-contracting AVX kernels,
# MKL in its compatible (CPU-independent) mode. Must be set before torch is imported.
os.environ["ATEN_CPU_CAPABILITY"] = "default"
os.environ["MKL_CBWR"] = "COMPATIBLE"

SKIP = 77
try:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    # The input formulas (also those of tests/support.hpp), shared with the golden data.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from make_golden import SHAPES, gradient, initial_param  # noqa: E402
except ImportError as exc:  # the ctest registers 77 as "skipped"
    print("torch_interop: skipped: cannot import torch or safetensors (%s)" % exc)
    sys.exit(SKIP)

NAMES = ["t0", "t1", "t2"]
N_STEPS, M_STEPS = 3, 3
DTYPES = {"float32": torch.float32, "float64": torch.float64}
MIXED_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
ST_DTYPE = {torch.float32: "F32", torch.float64: "F64"}

# shardopt's option names of each algorithm, in its order (Adam/AdamW: torch's betas split).
OPTION_NAMES = {
    "SGD": ["lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"],
    "Adagrad": ["lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps", "maximize"],
    "Adam": ["lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad", "maximize"],
    "AdamW": ["lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad", "maximize"],
    "RMSprop": ["lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"],
    "NAdam": ["lr", "beta1", "beta2", "eps", "weight_decay", "momentum_decay", "decoupled_weight_decay",
              "maximize"],
}
# Per-tensor scalar state: torch's 0-d tensors (float32 under torch's default dtype), float64
# scalars state.<param>.<key> in shardopt's checkpoints.
SCALAR_STATE = {"NAdam": {"mu_product"}}

# (algorithm, options in torch's names; the rest are torch's defaults)
CASES = [
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.1, maximize=True)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.2, weight_decay=0.1)),
    ("Adam", dict(lr=0.05, amsgrad=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.05, amsgrad=False)),
    ("AdamW", dict(lr=0.05, weight_decay=0.1)),
    ("AdamW", dict(lr=0.05, amsgrad=True, weight_decay=0.1, maximize=True)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.9, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01)),
    ("NAdam", dict(lr=0.05, weight_decay=0.1, momentum_decay=0.3)),
    ("NAdam", dict(lr=0.05, betas=(0.3, 0.9), weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
]
# Repeated with the tool on 2 ranks: (case index, dtype, layout)
MPI_CASES = [(4, "float32", "FlatPartition"), (8, "float64", "FlatPartition"), (0, "float32", "ChunkRows"),
             (10, "float32", "ChunkRows")]
# 16-bit parameters, float32 masters: (case index, dtype, layout, ranks[, GradScaler arguments])
SCALER = {"init_scale": 1024.0, "growth_interval": 2}  # grows at steps 2, 4, 6: its state changes across the files
MIXED_CASES = [(0, "bfloat16", None, 1), (4, "bfloat16", None, 1), (6, "float16", None, 1), (8, "float16", None, 1),
               (3, "bfloat16", None, 1), (4, "float16", "FlatPartition", 2), (8, "bfloat16", "ChunkRows", 2),
               (6, "bfloat16", None, 1, SCALER), (4, "float16", "FlatPartition", 2, SCALER)]


class Failure(Exception):
    pass


class ToolError(Exception):
    pass


# ---- options ------------------------------------------------------------------------------------

def expected_slots(algo, o):
    """torch's state keys (other than 'step') that exist after a step, for shardopt options `o`."""
    if algo == "SGD":
        return {"momentum_buffer"} if o["momentum"] != 0 else set()
    if algo == "Adagrad":
        return {"sum"}
    if algo in ("Adam", "AdamW"):
        return {"exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if o["amsgrad"] else set())
    if algo == "NAdam":
        return {"exp_avg", "exp_avg_sq"}
    return ({"square_avg"} | ({"momentum_buffer"} if o["momentum"] > 0 else set())
            | ({"grad_avg"} if o["centered"] else set()))


def shardopt_options(algo, group):
    """All of the algorithm's options in shardopt's names, from a torch param group."""
    out = {}
    for name in OPTION_NAMES[algo]:
        v = group["betas"][int(name[-1]) - 1] if name in ("beta1", "beta2") else group[name]
        out[name] = bool(v) if isinstance(v, bool) else float(v)
    return out


def torch_kwargs(algo, o):
    kw = {k: v for k, v in o.items() if k not in ("beta1", "beta2")}
    if "beta1" in o:
        kw["betas"] = (o["beta1"], o["beta2"])
    return kw


def fmt_options(o):
    return ",".join("%s=%s" % (k, ("true" if v else "false") if isinstance(v, bool) else repr(v))
                    for k, v in o.items())


def new_torch_optimizer(algo, params, kwargs):
    cls = getattr(torch.optim, algo)
    kwargs = dict(kwargs, foreach=False)
    if "fused" in inspect.signature(cls).parameters:
        kwargs["fused"] = False
    return cls(params, **kwargs)


def torch_steps(opt, params, first, last, dtype):
    with torch.no_grad():
        for k in range(first, last + 1):
            for t, p in enumerate(params):
                p.grad = gradient(k, t, dtype)
            opt.step()


# ---- checkpoints --------------------------------------------------------------------------------

def read_checkpoint(path, algo, options, dtype, extra_slots=frozenset()):
    """Reads and checks a shardopt checkpoint; returns ({name: step}, {name: {slot: tensor}}), the
    scalar state among the slots as float64 0-d tensors; `extra_slots` (16-bit parameters: master)
    beside the algorithm's."""
    problems = []
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("shardopt.format") != "1":
        problems.append("shardopt.format is %r, not '1'" % meta.get("shardopt.format"))
    if meta.get("shardopt.algorithm") != algo:
        problems.append("shardopt.algorithm is %r, not %r" % (meta.get("shardopt.algorithm"), algo))
    try:
        groups = json.loads(meta.get("shardopt.param_groups", "null"))
    except ValueError as exc:
        groups = None
        problems.append("shardopt.param_groups is not JSON: %s" % exc)
    if groups is not None:
        if not isinstance(groups, list) or len(groups) != 1:
            problems.append("expected one param group, got %r" % (groups,))
        else:
            g = groups[0]
            if g.get("params") != NAMES:
                problems.append("param group params %r, not %r" % (g.get("params"), NAMES))
            got = g.get("options", {})
            if set(got) != set(options):
                problems.append("param group option names %s, not %s" % (sorted(got), sorted(options)))
            for k, v in options.items():
                if k in got and (type(got[k]) is bool) != isinstance(v, bool):
                    problems.append("option %s is %r, of another JSON type than %r" % (k, got[k], v))
                elif k in got and got[k] != v:
                    problems.append("option %s is %r, not %r" % (k, got[k], v))
    steps, slots = {}, {}
    want = expected_slots(algo, options) | set(extra_slots)
    for t, name in enumerate(NAMES):
        key = "state.%s.step" % name
        s = tensors.get(key)
        if s is None:
            problems.append("%s is missing" % key)
        elif s.dtype != torch.int64 or tuple(s.shape) != ():
            problems.append("%s is %s %s, not an int64 scalar" % (key, s.dtype, list(s.shape)))
        else:
            steps[name] = int(s)
        slots[name] = {}
        for slot in sorted(want):
            key = "state.%s.%s" % (name, slot)
            v = tensors.get(key)
            if v is None:
                problems.append("%s is missing" % key)
            elif v.dtype != dtype or tuple(v.shape) != SHAPES[t]:
                problems.append("%s is %s %s, not %s %s" % (key, v.dtype, list(v.shape), dtype, list(SHAPES[t])))
            else:
                slots[name][slot] = v
        for key in sorted(SCALAR_STATE.get(algo, set())):
            full = "state.%s.%s" % (name, key)
            v = tensors.get(full)
            if v is None:
                problems.append("%s is missing" % full)
            elif v.dtype != torch.float64 or tuple(v.shape) != ():
                problems.append("%s is %s %s, not a float64 scalar" % (full, v.dtype, list(v.shape)))
            else:
                slots[name][key] = v
    want = want | SCALAR_STATE.get(algo, set())
    known = {"state.%s.%s" % (n, s) for n in NAMES for s in want | {"step"}}
    for key in sorted(set(tensors) - known):
        problems.append("unexpected tensor %s" % key)
    if problems:
        raise Failure("checkpoint %s:\n    %s" % (path, "\n    ".join(problems)))
    return steps, slots


def write_checkpoint(path, algo, opt, params, masters=False, scaler=None):
    """Writes torch optimizer `opt`'s state in shardopt's checkpoint format; with `masters`, its
    parameters (float32 masters of 16-bit ones) as slot master; with `scaler` (a GradScaler), its
    state_dict() as the metadata entry shardopt.grad_scaler."""
    group = opt.param_groups[0]
    tensors = {}
    for name, p in zip(NAMES, params):
        if masters:
            tensors["state.%s.master" % name] = p.detach().contiguous().clone()
        state = opt.state[p]
        for slot, v in state.items():
            if slot != "step" and torch.is_tensor(v):
                scalar = slot in SCALAR_STATE.get(algo, set())  # a float64 scalar in the file
                tensors["state.%s.%s" % (name, slot)] = (v.detach().to(torch.float64) if scalar else v.detach()).contiguous().clone()
        # torch has no step for SGD: every parameter stepped as often as the optimizer did.
        step = int(state["step"]) if "step" in state else N_STEPS
        tensors["state.%s.step" % name] = torch.tensor(step, dtype=torch.int64)
    groups = [{"options": shardopt_options(algo, group), "params": NAMES}]
    metadata = {"shardopt.format": "1", "shardopt.algorithm": algo, "shardopt.param_groups": json.dumps(groups)}
    if scaler is not None:
        metadata["shardopt.grad_scaler"] = json.dumps(scaler.state_dict())
    save_file(tensors, path, metadata=metadata)


def read_scaler_state(path):
    """The GradScaler state a shardopt checkpoint holds (torch's state_dict() keys), or None."""
    with safe_open(path, framework="pt") as f:
        text = (f.metadata() or {}).get("shardopt.grad_scaler")
    return None if text is None else json.loads(text)


def load_into_torch(opt, params, steps, slots, algo):
    """Fills torch optimizer state from a checkpoint read by read_checkpoint()."""
    for name, p in zip(NAMES, params):
        # the scalar state as torch keeps it: a 0-d tensor of its default dtype (float32)
        state = {slot: v.to(torch.get_default_dtype()) if slot in SCALAR_STATE.get(algo, set()) else v.clone()
                 for slot, v in slots[name].items()}
        if algo != "SGD":  # torch keeps the step as a float32 0-d tensor
            state["step"] = torch.tensor(float(steps[name]), dtype=torch.float32)
        opt.state[p] = state


def read_params(path, dtype):
    with safe_open(path, framework="pt") as f:
        got = {k: f.get_tensor(k) for k in f.keys()}
    if sorted(got) != NAMES:
        raise Failure("%s holds tensors %s, not %s" % (path, sorted(got), NAMES))
    for t, name in enumerate(NAMES):
        if got[name].dtype != dtype or tuple(got[name].shape) != SHAPES[t]:
            raise Failure("%s: %s is %s %s, not %s %s" % (path, name, got[name].dtype, list(got[name].shape),
                                                          dtype, list(SHAPES[t])))
    return [got[n] for n in NAMES]


def write_params(path, params):
    save_file({n: p.detach().contiguous().clone() for n, p in zip(NAMES, params)}, path)


# ---- comparison ---------------------------------------------------------------------------------

def _key(x, dtype):
    """Monotonic integer of a float's bits (negative values below positive ones)."""
    if dtype == torch.float32:
        u = struct.unpack("<i", struct.pack("<f", x))[0]
        return (-(2 ** 31) - u) if u < 0 else u
    u = struct.unpack("<q", struct.pack("<d", x))[0]
    return (-(2 ** 63) - u) if u < 0 else u


class Tally:
    """Worst distances seen, and the mismatches beyond tolerance."""

    def __init__(self):
        self.ulps, self.rel, self.errors, self.compared = 0, 0.0, [], 0

    def compare(self, what, ours, ref):
        dtype = ref.dtype
        eps = torch.finfo(dtype).eps
        for i, (a, b) in enumerate(zip(ours.reshape(-1).tolist(), ref.reshape(-1).tolist())):
            self.compared += 1
            if a == b:
                continue
            if math.isnan(a) or math.isnan(b):
                u, rel = float("inf"), float("inf")
            else:
                u = abs(_key(a, dtype) - _key(b, dtype))
                rel = abs(a - b) / max(abs(b), 1e-300)
            self.ulps, self.rel = max(self.ulps, u), max(self.rel, rel)
            ok = (u <= 8 or abs(a - b) <= 4 * eps) if dtype == torch.float32 else rel <= 1e-12
            if not ok:
                self.errors.append("%s element %d: shardopt %r, torch %r (%s ulps, rel %.3g)" % (what, i, a, b, u, rel))

    def compare16(self, what, ours, ref):
        """16-bit values: within one ulp (sign and magnitude), the unequal ones counted."""
        def key(u):
            return -(u & 0x7FFF) if u < 0 else u
        self.unequal16 = getattr(self, "unequal16", 0)
        self.compared16 = getattr(self, "compared16", 0)
        for i, (a, b) in enumerate(zip(ours.reshape(-1).view(torch.int16).tolist(), ref.reshape(-1).view(torch.int16).tolist())):
            self.compared += 1
            self.compared16 += 1
            if a == b:
                continue
            self.unequal16 += 1
            if abs(key(a) - key(b)) > 1:
                self.errors.append("%s element %d: shardopt %r, torch %r (more than one 16-bit ulp)" % (
                    what, i, ours.reshape(-1)[i].item(), ref.reshape(-1)[i].item()))

    def exact(self, what, ours, ref):
        if ours != ref:
            self.errors.append("%s: %r, expected %r" % (what, ours, ref))

    def bitwise(self, what, a, b):
        self.compared += a.numel()
        if not torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)):
            self.errors.append("%s: not bit-identical" % what)

    def compare_state(self, what, steps, slots, opt, params, step_count):
        for name, p in zip(NAMES, params):
            self.exact("%s: step of %s" % (what, name), steps[name], step_count)
            ts = opt.state[p]
            if "step" in ts:
                self.exact("%s: torch's step of %s" % (what, name), int(ts["step"]), step_count)
            torch_slots = {k for k, v in ts.items() if k != "step" and torch.is_tensor(v)}
            self.exact("%s: slots of %s" % (what, name), sorted(slots[name]), sorted(torch_slots))
            for slot in sorted(set(slots[name]) & torch_slots):
                if slots[name][slot].dim() == 0:  # scalar state: the same value exactly
                    self.exact("%s: %s of %s" % (what, slot, name), float(slots[name][slot]), float(ts[slot]))
                else:
                    self.compare("%s: %s of %s" % (what, slot, name), slots[name][slot], ts[slot])


# ---- the tool -----------------------------------------------------------------------------------

class Tool:
    def __init__(self, path, mpiexec, verbose):
        self.path, self.mpiexec, self.verbose = path, mpiexec, verbose
        self.env = dict(os.environ)
        for k, v in (("OMPI_ALLOW_RUN_AS_ROOT", "1"), ("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"),
                     ("OMPI_MCA_btl_vader_single_copy_mechanism", "none")):
            self.env.setdefault(k, v)
        self.mpi_flags = []
        if mpiexec:
            try:
                version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=60)
                if any(s in version.stdout + version.stderr for s in ("Open MPI", "OpenRTE", "Open RTE")):
                    self.mpi_flags = ["--oversubscribe"]
            except (OSError, subprocess.SubprocessError):
                pass

    def run(self, algo, dtype_name, options, first, last, params_out, load=None, params_in=None, save=None,
            layout=None, ranks=1, scaler=None):
        cmd = [self.path, "run", "--algo", algo, "--dtype", dtype_name, "--options", fmt_options(options),
               "--from", str(first), "--to", str(last), "--params-out", params_out]
        scaler = fmt_options(scaler) if scaler else None
        for flag, value in (("--load", load), ("--params-in", params_in), ("--save", save), ("--layout", layout),
                            ("--grad-scaler", scaler)):
            if value is not None:
                cmd += [flag, value]
        if ranks > 1:
            cmd = [self.mpiexec, "-n", str(ranks)] + self.mpi_flags + cmd
        if self.verbose:
            print("  $ " + " ".join(cmd))
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=300)
        except subprocess.TimeoutExpired:
            raise ToolError("timed out: %s" % " ".join(cmd))
        if r.returncode != 0:
            raise ToolError("exit status %d: %s\n%s%s" % (r.returncode, " ".join(cmd), r.stdout, r.stderr))


# ---- one case -----------------------------------------------------------------------------------

def run_case(tool, workdir, algo, torch_opts, dtype_name, layout=None, ranks=1, single_dir=None):
    """Runs (a) and (b) for one case; returns their Tallies."""
    dtype = DTYPES[dtype_name]
    ta, tb = Tally(), Tally()
    f = lambda name: os.path.join(workdir, name)  # noqa: E731
    last = N_STEPS + M_STEPS

    def same_as_single_process(tally, what, files):
        """The sharded run must give the bits of one process (same files in single_dir)."""
        for name in files:
            with safe_open(f(name), framework="pt") as x, safe_open(os.path.join(single_dir, name), framework="pt") as y:
                tally.exact("%s: %s tensors vs. 1 process" % (what, name), sorted(x.keys()), sorted(y.keys()))
                tally.exact("%s: %s metadata vs. 1 process" % (what, name), x.metadata(), y.metadata())
                for key in sorted(set(x.keys()) & set(y.keys())):
                    tally.bitwise("%s: %s %s vs. 1 process" % (what, name, key), x.get_tensor(key), y.get_tensor(key))

    # torch's own trajectory: steps 1..3 (the reference state (a) is checked against, and what
    # (b) writes), then 4..6.
    ref = [initial_param(t, dtype).requires_grad_(True) for t in range(len(SHAPES))]
    ref_opt = new_torch_optimizer(algo, ref, torch_opts)
    options = shardopt_options(algo, ref_opt.param_groups[0])
    torch_steps(ref_opt, ref, 1, N_STEPS, dtype)

    # (b) first part: torch writes its checkpoint and parameters after step 3, then goes on.
    write_checkpoint(f("ck_torch.safetensors"), algo, ref_opt, ref)
    write_params(f("p3_torch.safetensors"), ref)
    ref3 = [p.detach().clone() for p in ref]
    # The written file must read back as torch's state, exactly.
    steps_t, slots_t = read_checkpoint(f("ck_torch.safetensors"), algo, options, dtype)
    for name, p in zip(NAMES, ref):
        tb.exact("(b) written step of %s" % name, steps_t[name], N_STEPS)
        for slot, v in slots_t[name].items():
            if v.dim() == 0:
                tb.exact("(b) written %s of %s" % (slot, name), float(v), float(ref_opt.state[p][slot]))
            else:
                tb.bitwise("(b) written %s of %s" % (slot, name), v, ref_opt.state[p][slot])

    # (a) shardopt steps 1..3 and saves; the checkpoint must hold torch's state after its steps 1..3.
    tool.run(algo, dtype_name, options, 0, N_STEPS, f("p3.safetensors"), save=f("ck.safetensors"),
             layout=layout, ranks=ranks)
    steps_a, slots_a = read_checkpoint(f("ck.safetensors"), algo, options, dtype)
    p3 = read_params(f("p3.safetensors"), dtype)
    for t, name in enumerate(NAMES):
        ta.compare("(a) parameter %s after step %d" % (name, N_STEPS), p3[t], ref3[t])
    ta.compare_state("(a) checkpoint after step %d" % N_STEPS, steps_a, slots_a, ref_opt, ref, N_STEPS)

    torch_steps(ref_opt, ref, N_STEPS + 1, last, dtype)  # torch's own 4..6

    # (a) torch loads shardopt's checkpoint (options from the file) and steps 4..6.
    with safe_open(f("ck.safetensors"), framework="pt") as fh:
        file_options = json.loads(fh.metadata()["shardopt.param_groups"])[0]["options"]
    pa = [p.clone().requires_grad_(True) for p in p3]
    opt_a = new_torch_optimizer(algo, pa, torch_kwargs(algo, file_options))
    load_into_torch(opt_a, pa, steps_a, slots_a, algo)
    torch_steps(opt_a, pa, N_STEPS + 1, last, dtype)
    # ... and shardopt loads the same checkpoint and steps 4..6.
    tool.run(algo, dtype_name, options, N_STEPS, last, f("p6.safetensors"), load=f("ck.safetensors"),
             params_in=f("p3.safetensors"), save=f("ck6.safetensors"), layout=layout, ranks=ranks)
    p6 = read_params(f("p6.safetensors"), dtype)
    steps6, slots6 = read_checkpoint(f("ck6.safetensors"), algo, options, dtype)
    for t, name in enumerate(NAMES):
        ta.compare("(a) parameter %s after step %d" % (name, last), p6[t], pa[t])
    ta.compare_state("(a) state after step %d" % last, steps6, slots6, opt_a, pa, last)
    if single_dir is None:
        # save + load loses nothing: resuming gives the bits of an uninterrupted shardopt run.
        tool.run(algo, dtype_name, options, 0, last, f("p6_straight.safetensors"), save=f("ck6_straight.safetensors"))
        for t, p in enumerate(read_params(f("p6_straight.safetensors"), dtype)):
            ta.bitwise("(a) parameter %s after step %d, resumed vs. uninterrupted" % (NAMES[t], last), p6[t], p)
        steps_s, slots_s = read_checkpoint(f("ck6_straight.safetensors"), algo, options, dtype)
        ta.exact("(a) steps, resumed vs. uninterrupted", steps6, steps_s)
        for name in NAMES:
            for slot in slots_s[name]:
                ta.bitwise("(a) %s of %s, resumed vs. uninterrupted" % (slot, name), slots6[name][slot], slots_s[name][slot])
    else:
        same_as_single_process(ta, "(a)", ["ck.safetensors", "p3.safetensors", "ck6.safetensors", "p6.safetensors"])

    # (b) shardopt loads torch's checkpoint and steps 4..6; torch went on from its own state.
    tool.run(algo, dtype_name, options, N_STEPS, last, f("p6_from_torch.safetensors"),
             load=f("ck_torch.safetensors"), params_in=f("p3_torch.safetensors"),
             save=f("ck6_from_torch.safetensors"), layout=layout, ranks=ranks)
    p6b = read_params(f("p6_from_torch.safetensors"), dtype)
    steps6b, slots6b = read_checkpoint(f("ck6_from_torch.safetensors"), algo, options, dtype)
    for t, name in enumerate(NAMES):
        tb.compare("(b) parameter %s after step %d" % (name, last), p6b[t], ref[t])
    tb.compare_state("(b) state after step %d" % last, steps6b, slots6b, ref_opt, ref, last)
    if single_dir is not None:
        same_as_single_process(tb, "(b)", ["ck6_from_torch.safetensors", "p6_from_torch.safetensors"])
    return ta, tb


def recipe_steps(opt, params, masters, first, last, dtype, scaler=None):
    """torch's float32-master recipe: the masters' gradients the 16-bit ones widened, the
    parameters the stepped masters rounded. With `scaler` (torch.amp.GradScaler), the 16-bit
    gradients are the float32 ones times its scale, and scaler.step(opt); scaler.update()."""
    with torch.no_grad():
        for k in range(first, last + 1):
            # scaler.scale(loss) as a training step would (it also starts the scaler's tensors)
            scale = float(scaler.scale(torch.ones((), dtype=torch.float32))) if scaler is not None else 1.0
            for t, m in enumerate(masters):
                m.grad = (gradient(k, t, torch.float32) * scale).to(dtype).float()
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            for p, m in zip(params, masters):
                p.copy_(m.to(dtype))


def run_mixed_case(tool, workdir, algo, torch_opts, dtype_name, layout=None, ranks=1, scaler_opts=None):
    """(a) and (b) for 16-bit parameters against torch's float32-master recipe; with `scaler_opts`
    (torch.amp.GradScaler's arguments), with a GradScaler on both sides whose state travels in the
    checkpoints (shardopt.grad_scaler) and must equal torch's."""
    dtype = MIXED_DTYPES[dtype_name]
    ta, tb = Tally(), Tally()
    f = lambda name: os.path.join(workdir, name)  # noqa: E731
    last = N_STEPS + M_STEPS
    master = frozenset({"master"})

    def split(slots):  # the masters apart from the algorithm's slots
        return {n: s.pop("master") for n, s in slots.items()}, slots

    ref = [initial_param(t, torch.float32).to(dtype) for t in range(len(SHAPES))]
    ref_m = [p.float().requires_grad_(True) for p in ref]
    ref_opt = new_torch_optimizer(algo, ref_m, torch_opts)
    options = shardopt_options(algo, ref_opt.param_groups[0])
    new_scaler = lambda: torch.amp.GradScaler("cpu", **scaler_opts) if scaler_opts else None  # noqa: E731
    ref_scaler = new_scaler()
    recipe_steps(ref_opt, ref, ref_m, 1, N_STEPS, dtype, ref_scaler)
    write_checkpoint(f("ck_torch.safetensors"), algo, ref_opt, ref_m, masters=True, scaler=ref_scaler)
    write_params(f("p3_torch.safetensors"), ref)
    ref3 = [p.clone() for p in ref]
    ref_scaler3 = ref_scaler.state_dict() if ref_scaler else None

    def check_scaler(tally, what, path, scaler):
        if scaler is not None:
            tally.exact("%s: the GradScaler state in %s" % (what, os.path.basename(path)), read_scaler_state(path),
                        scaler.state_dict())

    # (a) shardopt steps 1..3 and saves: torch's masters, state and 16-bit parameters after 1..3.
    tool.run(algo, dtype_name, options, 0, N_STEPS, f("p3.safetensors"), save=f("ck.safetensors"), layout=layout, ranks=ranks,
             scaler=scaler_opts)
    if ref_scaler is not None:
        ta.exact("(a) the GradScaler state after step %d" % N_STEPS, read_scaler_state(f("ck.safetensors")), ref_scaler3)
    steps_a, slots_a = read_checkpoint(f("ck.safetensors"), algo, options, torch.float32, master)
    masters_a, slots_a = split(slots_a)
    p3 = read_params(f("p3.safetensors"), dtype)
    for t, name in enumerate(NAMES):
        ta.compare16("(a) parameter %s after step %d" % (name, N_STEPS), p3[t], ref3[t])
        ta.compare("(a) master of %s after step %d" % (name, N_STEPS), masters_a[name], ref_m[t].detach())
    ta.compare_state("(a) checkpoint after step %d" % N_STEPS, steps_a, slots_a, ref_opt, ref_m, N_STEPS)
    recipe_steps(ref_opt, ref, ref_m, N_STEPS + 1, last, dtype, ref_scaler)  # torch's own 4..6

    # (a) torch takes shardopt's masters, state (and scaler) and steps 4..6; shardopt loads and steps 4..6.
    pa = [p.clone() for p in p3]
    ma = [masters_a[n].clone().requires_grad_(True) for n in NAMES]
    opt_a = new_torch_optimizer(algo, ma, torch_opts)
    load_into_torch(opt_a, ma, steps_a, slots_a, algo)
    scaler_a = new_scaler()
    if scaler_a is not None:
        scaler_a.load_state_dict(read_scaler_state(f("ck.safetensors")))
    recipe_steps(opt_a, pa, ma, N_STEPS + 1, last, dtype, scaler_a)

    def resume(tally, part, load, params_in, out, params, masters, opt, scaler):
        """shardopt loads `load`, steps 4..6 from `params_in`; compared with torch's run."""
        tool.run(algo, dtype_name, options, N_STEPS, last, f("p6%s.safetensors" % out), load=f(load),
                 params_in=f(params_in), save=f("ck6%s.safetensors" % out), layout=layout, ranks=ranks, scaler=scaler_opts)
        check_scaler(tally, "(%s) after step %d" % (part, last), f("ck6%s.safetensors" % out), scaler)
        p6 = read_params(f("p6%s.safetensors" % out), dtype)
        steps6, slots6 = read_checkpoint(f("ck6%s.safetensors" % out), algo, options, torch.float32, master)
        masters6, slots6 = split(slots6)
        for t, name in enumerate(NAMES):
            tally.compare16("(%s) parameter %s after step %d" % (part, name, last), p6[t], params[t])
            tally.compare("(%s) master of %s after step %d" % (part, name, last), masters6[name], masters[t].detach())
        tally.compare_state("(%s) state after step %d" % (part, last), steps6, slots6, opt, masters, last)

    resume(ta, "a", "ck.safetensors", "p3.safetensors", "", pa, ma, opt_a, scaler_a)
    # (b) shardopt loads torch's masters and state (and scaler) and steps 4..6; torch went on from its own.
    resume(tb, "b", "ck_torch.safetensors", "p3_torch.safetensors", "_from_torch", ref, ref_m, ref_opt, ref_scaler)
    for t in (ta, tb):
        if getattr(t, "unequal16", 0) * 100 > getattr(t, "compared16", 0):
            t.errors.append("%d of %d 16-bit parameters differ from torch's (more than 1%%)" % (t.unequal16, t.compared16))
    return ta, tb


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tool", required=True, help="the shardopt_checkpoint_tool executable")
    ap.add_argument("--workdir", default="interop", help="where the files go (created)")
    ap.add_argument("--mpiexec", default=shutil.which("mpiexec") or "",
                    help="MPI launcher for the 2-rank cases (default: mpiexec on PATH)")
    ap.add_argument("--no-mpi", action="store_true", help="skip the 2-rank cases")
    ap.add_argument("--verbose", action="store_true", help="print the tool's command lines")
    args = ap.parse_args()
    if not os.access(args.tool, os.X_OK):
        print("torch_interop: error: --tool %s is not an executable file" % args.tool, file=sys.stderr)
        return 2
    torch.set_default_dtype(torch.float32)  # torch's state['step'] is float32 by default
    mpiexec = None if args.no_mpi or not args.mpiexec else args.mpiexec
    tool = Tool(os.path.abspath(args.tool), mpiexec, args.verbose)
    print("torch_interop: torch %s, steps 1..%d then %d..%d, tool %s" % (
        torch.__version__, N_STEPS, N_STEPS + 1, N_STEPS + M_STEPS, args.tool))

    runs = [(c, d, None, 1, None) for c in range(len(CASES)) for d in DTYPES]
    if mpiexec:
        runs += [(c, d, layout, 2, None) for c, d, layout in MPI_CASES]
    else:
        print("torch_interop: no mpiexec: the 2-rank cases are skipped")
    runs += [(m + (None,))[:5] for m in MIXED_CASES if m[3] == 1 or mpiexec]
    failed = 0
    for c, dtype_name, layout, ranks, scaler in runs:
        algo, torch_opts = CASES[c]
        label = "%-7s %s %s" % (algo, dtype_name, ",".join("%s=%s" % kv for kv in torch_opts.items()))
        if ranks > 1:
            label += " [%d ranks, %s]" % (ranks, layout)
        if scaler:
            label += " [GradScaler %s]" % fmt_options(scaler)
        tag = "%02d_%s" % (c, dtype_name) + ("_np%d_%s" % (ranks, layout) if ranks > 1 else "") + ("_scaler" if scaler else "")
        workdir = os.path.join(args.workdir, tag)
        os.makedirs(workdir, exist_ok=True)
        single = os.path.join(args.workdir, "%02d_%s" % (c, dtype_name)) if ranks > 1 else None
        try:
            if dtype_name in MIXED_DTYPES:
                tallies = run_mixed_case(tool, workdir, algo, torch_opts, dtype_name, layout, ranks, scaler)
            else:
                tallies = run_case(tool, workdir, algo, torch_opts, dtype_name, layout, ranks, single)
        except ToolError as exc:
            print("FAIL %s: the tool failed: %s" % (label, exc))
            failed += 1
            continue
        except Failure as exc:
            print("FAIL %s: %s" % (label, exc))
            failed += 1
            continue
        worst = ", ".join("(%s) worst %s ulps" % (part, t.ulps) + (" (rel %.2g)" % t.rel if dtype_name == "float64" else "")
                          for part, t in zip("ab", tallies))
        errors = tallies[0].errors + tallies[1].errors
        if errors:
            failed += 1
            print("FAIL %s: %s; %d problem(s):" % (label, worst, len(errors)))
            for e in errors[:20]:
                print("    " + e)
            if len(errors) > 20:
                print("    ... and %d more" % (len(errors) - 20))
        else:
            print("ok   %s: %s; %d values" % (label, worst, sum(t.compared for t in tallies)))
    print("torch_interop: %d of %d case(s) failed" % (failed, len(runs)) if failed else
          "torch_interop: all %d case(s) passed" % len(runs))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
