#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""PyTorch's distributed optimizer step on the work of bench_dist, for comparison in one run.

P processes (torch.multiprocessing, gloo backend, one thread each) hold 16 float32 tensors of
8M elements in all, with per-rank gradients. Two variants of one step, best of S:
  ddp+Adam   all-reduce of the gradients (one flat bucket, averaged), then Adam (fused where the
             installed torch has it) on every tensor: the data-parallel baseline;
  ddp+ZeRO   the same all-reduce, then ZeroRedundancyOptimizer(Adam).step(): each rank steps its
             share of the tensors and broadcasts the updated parameters.
Prints one JSON object per line: {"impl", "ranks", "elements", "step_s", "allreduce_s"}.

Usage: python3 bench/dist_torch.py [--ranks 2] [--elements 8388608] [--tensors 16] [--steps 10]
"""
import argparse
import inspect
import json
import os
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, args, init_file, queue):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=args.ranks)
    from torch.distributed.optim import ZeroRedundancyOptimizer

    per = args.elements // args.tensors
    fused = {"fused": True} if "fused" in inspect.signature(torch.optim.Adam).parameters else {}
    for impl in ("ddp+Adam", "ddp+ZeRO"):
        params = [torch.full((per,), 0.5, requires_grad=True) for _ in range(args.tensors)]
        for p in params:
            p.grad = torch.full_like(p, 0.01 * (rank + 1))
        if impl == "ddp+Adam":
            opt = torch.optim.Adam(params, lr=1e-3, **fused)
        else:
            opt = ZeroRedundancyOptimizer(params, optimizer_class=torch.optim.Adam, lr=1e-3, **fused)
        flat = torch.empty(per * args.tensors)

        def step():
            t0 = time.perf_counter()
            torch.cat([p.grad for p in params], out=flat)  # one bucket, as DDP fills its buckets
            dist.all_reduce(flat)
            flat.div_(args.ranks)
            for i, p in enumerate(params):
                p.grad.copy_(flat[i * per:(i + 1) * per])
            t1 = time.perf_counter()
            opt.step()
            return time.perf_counter() - t0, t1 - t0

        step()
        best = (float("inf"), 0.0)
        for _ in range(args.steps):
            dist.barrier()
            total, reduce = step()
            both = torch.tensor([total, reduce], dtype=torch.float64)
            dist.all_reduce(both, op=dist.ReduceOp.MAX)
            if both[0].item() < best[0]:
                best = (both[0].item(), both[1].item())
        if rank == 0:
            queue.put(dict(impl=impl, ranks=args.ranks, elements=per * args.tensors, step_s=best[0], allreduce_s=best[1]))
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--elements", type=int, default=8 << 20)
    ap.add_argument("--tensors", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        ctx = mp.get_context("spawn")
        queue = ctx.SimpleQueue()
        mp.start_processes(worker, args=(args, os.path.join(d, "init"), queue), nprocs=args.ranks, start_method="spawn")
        while not queue.empty():
            print(json.dumps(queue.get()), flush=True)


if __name__ == "__main__":
    main()
