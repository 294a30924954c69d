#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Runs bench_step and PyTorch's optimizers on the same work in one run and prints the ratios.

Usage: python3 bench/compare.py --bench build/bench/bench_step [--quick] [--sizes large,many,packed,cache]

Columns: shardopt's rate, its share of the bandwidth ceiling measured by bench_step in the same
run (over contiguous buffers, and over the optimizer's own arrays), PyTorch's fastest
implementation (one thread) and shardopt / PyTorch.
"""
import argparse
import json
import os
import subprocess
import sys


def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True, help="path of the bench_step executable")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", default="large,many,packed,cache")
    args = ap.parse_args()
    extra = (["--quick"] if args.quick else []) + ["--sizes", args.sizes]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ours = run_json([args.bench, "--json"] + extra, env)
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        theirs = run_json([sys.executable, os.path.join(here, "torch_bench.py")] + extra, env)
    except subprocess.CalledProcessError as e:
        print("PyTorch benchmark failed:\n" + e.stderr, file=sys.stderr)
        theirs = []
    best = {}
    for t in theirs:
        if "error" in t:
            continue
        key = (t["algo"], t["dtype"], t["work"])
        if key not in best or t["elements_per_s"] > best[key]["elements_per_s"]:
            best[key] = t
    header = (f"{'algo':8} {'dtype':8} {'work':6} {'shardopt G el/s':>16} {'GB/s':>7} {'of ceiling':>10} {'of same-arrays':>14}"
              f"   {'PyTorch best':>24} {'G el/s':>7} {'ratio':>6}")
    print(header)
    print("-" * len(header))
    for o in ours:
        key = (o["algo"], o["dtype"], o["work"])
        rate = o["elements_per_s"]
        same = o["same_arrays_ceiling_elements_per_s"]  # 0 for 16-bit parameters (not measured)
        same_text = f"{100 * rate / same:13.1f}%" if same else f"{'-':>14}"
        line = f"{o['algo']:8} {o['dtype']:8} {o['work']:6} {rate / 1e9:16.3f} {rate * o['bytes_per_element'] / 1e9:7.2f} {100 * o['fraction_of_ceiling']:9.1f}% {same_text}"
        t = best.get(key)
        if t:
            line += f"   {t['impl']:>24} {t['elements_per_s'] / 1e9:7.3f} {rate / t['elements_per_s']:5.2f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
