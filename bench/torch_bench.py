#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""PyTorch's own CPU optimizers on the work of bench_step, one thread, best of N.

For SGD (momentum 0.9), Adagrad, Adam and AdamW in float32 and float64, on
  large: one tensor of 32M elements; many: 10k tensors of 1k elements; packed: the same 10k
  tensors as views into one buffer; cache: one tensor of 16k,
with every implementation the installed torch has: foreach=False (the per-tensor loop),
foreach=True (multi-tensor) and fused=True (fused CPU kernels). Prints one JSON object per line:
{"algo", "dtype", "work", "impl", "elements", "seconds", "elements_per_s"}.

Usage: python3 bench/torch_bench.py [--quick] [--sizes large,many,packed,cache]
"""
import argparse
import inspect
import json
import time

import torch

WORKS = {"large": (1, 32 << 20), "many": (10000, 1000), "packed": (10000, 1000), "cache": (1, 16 << 10)}
QUICK = {"large": (1, 1 << 20), "many": (100, 1000), "packed": (100, 1000), "cache": (1, 16 << 10)}
ALGOS = [
    ("SGD", torch.optim.SGD, dict(lr=0.01, momentum=0.9)),
    ("Adagrad", torch.optim.Adagrad, dict(lr=0.01)),
    ("Adam", torch.optim.Adam, dict(lr=0.001)),
    ("AdamW", torch.optim.AdamW, dict(lr=0.001)),
]


def implementations(cls):
    params = inspect.signature(cls).parameters
    impls = [("foreach=False", dict(foreach=False))]
    if "foreach" in params:
        impls.append(("foreach=True", dict(foreach=True)))
    if "fused" in params:
        impls.append(("fused=True", dict(fused=True)))
    return impls


def time_step(opt, reps):
    opt.step()  # warm-up: allocates the state
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        opt.step()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", default="large,many,packed,cache")
    args = ap.parse_args()
    torch.set_num_threads(1)
    works = QUICK if args.quick else WORKS
    for work in args.sizes.split(","):
        tensors, elements = works[work]
        reps = 200 if tensors * elements < (1 << 20) else 5
        for dtype_name, dtype in (("float32", torch.float32), ("float64", torch.float64)):
            for name, cls, options in ALGOS:
                for impl, flags in implementations(cls):
                    if work == "packed":  # views into one buffer each for parameters and gradients
                        flat = torch.full((tensors * elements,), 0.5, dtype=dtype)
                        flat_grad = torch.full_like(flat, 0.01)
                        params = list(flat.split(elements))
                        for p, g in zip(params, flat_grad.split(elements)):
                            p.grad = g
                    else:
                        params = [torch.full((elements,), 0.5, dtype=dtype, requires_grad=True) for _ in range(tensors)]
                        for p in params:
                            p.grad = torch.full_like(p, 0.01)
                    try:
                        opt = cls(params, **options, **flags)
                        seconds = time_step(opt, reps)
                    except (RuntimeError, ValueError) as e:  # e.g. fused not supported for this dtype/device
                        print(json.dumps(dict(algo=name, dtype=dtype_name, work=work, impl=impl, error=str(e).splitlines()[0])), flush=True)
                        continue
                    n = tensors * elements
                    print(json.dumps(dict(algo=name, dtype=dtype_name, work=work, impl=impl, elements=n,
                                          seconds=seconds, elements_per_s=n / seconds)), flush=True)
                    del opt, params


if __name__ == "__main__":
    main()
