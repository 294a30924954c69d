#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Golden data for shardopt::GradScaler: torch.amp.GradScaler's scale and growth tracker after each
update, for given patterns of overflowing steps, written to tests/golden/grad_scaler.txt.

Each case is torch.amp.GradScaler("cpu", init_scale, growth_factor, backoff_factor, growth_interval)
around SGD on one float32 parameter whose gradient is set, at each step, to scale() (finite) or to
inf (an overflow); then scaler.step(opt), scaler.update(). Lines:
  case <init_scale> <growth_factor> <backoff_factor> <growth_interval>
  step <0|1 overflow> <scale as float32 bits, hex> <growth tracker>
"""
import struct
import sys
from pathlib import Path

import torch

CASES = [
    # (init_scale, growth_factor, backoff_factor, growth_interval, overflow pattern)
    (65536.0, 2.0, 0.5, 3, "0001000011000000100"),
    (65536.0, 1.7, 0.3, 2, "00100011010000000"),
    (3.0e38, 2.0, 0.5, 1, "00010"),  # growth that would overflow float32 is not taken
    (1.5, 1.25, 0.9, 4, "1111000000001"),
]


def bits(x: float) -> str:
    return struct.pack(">f", x).hex()


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "tests/golden/grad_scaler.txt"
    lines = [f"# torch {torch.__version__}: scripts/make_grad_scaler_golden.py"]
    for init, growth, backoff, interval, pattern in CASES:
        lines.append(f"case {init!r} {growth!r} {backoff!r} {interval}")
        scaler = torch.amp.GradScaler("cpu", init_scale=init, growth_factor=growth, backoff_factor=backoff,
                                      growth_interval=interval)
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=0.1)
        for c in pattern:
            loss = scaler.scale((p * 0 + 1).sum())  # the scale's value, as a tensor
            loss.backward()
            if c == "1":
                p.grad.fill_(float("inf"))
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
            lines.append(f"step {c} {bits(scaler.get_scale())} {scaler._get_growth_tracker()}")
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
