#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Generate tests/golden/half.txt: torch's conversions between float32 and bfloat16 / float16.

tests/test_half.cpp converts the same inputs with shardopt::bfloat16 and shardopt::float16 and
compares. Four conversions, each over input sets built from formulas the test repeats:

  bf16_to_f32, f16_to_f32   every 16-bit pattern h = 0..65535, in order.
  f32_to_bf16, f32_to_f16   for every 16-bit pattern h = 0..65535, in order, whose value v is finite
                            and not the largest finite value of its sign (h & 0x7fff != max, where
                            max is 0x7f7f for bfloat16 and 0x7bff for float16), the float32 bit
                            patterns of: v; the midpoint m of v and the value of h + 1 (the next
                            value away from zero: exact in float32, a tie); the float32 below m;
                            the float32 above m (both in magnitude). Then a sweep of 2^20 float32
                            bit patterns, (i * 2654435761) mod 2^32 for i = 0..2^20-1 (NaNs and
                            infinities among them). Then the specials below.

Output (one item per line):

    # comment
    hash <conversion> <set> <count> <fnv>    FNV-1a 64 (offset 14695981039346656037, prime
                                             1099511628211) of the outputs' bytes, little-endian,
                                             over a set: all, values, ties, below, above, sweep
    pair <conversion> <input hex> <output hex>   one special input and torch's output

The sets of the f32_to_* conversions are interleaved in the order above (v, m, below, above for
each h), the hash of "all" is over that order, then the sweep, then the specials; the hashes of
"values", "ties", "below", "above" and "sweep" are over those alone, to tell where a difference is.

torch's bits are those of its default CPU kernels: the script pins ATEN_CPU_CAPABILITY=default.
Its vectorized kernels (AVX2 and up) give other NaN bits (measured with torch 2.15: 0xffff for a
NaN converted to bfloat16, where the default kernel gives 0x7fc0); other values are the same.

Usage: python3 scripts/make_half_golden.py [output_path]
"""
import os
import sys

os.environ["ATEN_CPU_CAPABILITY"] = "default"  # must be set before torch is imported
import numpy as np  # noqa: E402
import torch  # noqa: E402

FNV_OFFSET = 14695981039346656037
FNV_PRIME = 1099511628211
MASK = (1 << 64) - 1


def fnv1a(data: bytes) -> int:
    h = FNV_OFFSET
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK
    return h


SPECIALS = [
    0x00000000, 0x80000000, 0x7F800000, 0xFF800000,              # zeros, infinities
    0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FA00000, 0xFF812345,  # NaNs: quiet, signalling, payloads
    0x7FFFFFFF, 0xFFFFFFFF, 0x7FBFFFFF,
    0x00000001, 0x80000001, 0x007FFFFF, 0x00800000, 0x80800000,  # float32 subnormals, smallest normal
    0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F7FFF, 0x7F7F8000, 0x7F7F8001,  # float32 max; bfloat16 overflow ties
    0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001, 0x47800000,  # 65504, below 65520, 65520 (tie to inf)
    0x33000000, 0x33000001, 0x33800000, 0x33C00000, 0x34000000,  # float16 subnormal range: 2^-25 (tie to 0)
    0x387FC000, 0x387FE000, 0x387FF000, 0x38800000, 0x38801000,  # largest float16 subnormal, ties, 2^-14
    0x3F800000, 0xBF800000, 0x3F808000, 0x3F818000, 0x3F800FFF,  # 1, -1, bfloat16 ties around 1
    0x3F801000, 0x3F803000, 0x40490FDB, 0x3DCCCCCD, 0xC2F6E979,  # float16 ties around 1, pi, 0.1, -123.456
]


def f32_inputs(max_finite: int, value_of) -> dict:
    """The interleaved per-pattern inputs: values, ties, below, above (as uint32 bit patterns)."""
    values, ties, below, above = [], [], [], []
    for h in range(1 << 16):
        mag = h & 0x7FFF
        v = value_of(h)
        if not np.isfinite(v) or mag == max_finite:
            continue
        nxt = value_of(h + 1)
        m = np.float32((np.float64(v) + np.float64(nxt)) / 2)
        assert np.float64(m) == (np.float64(v) + np.float64(nxt)) / 2, "midpoint not exact"
        mb = int(np.array([m], dtype=np.float32).view(np.uint32)[0])
        values.append(int(np.array([v], dtype=np.float32).view(np.uint32)[0]))
        ties.append(mb)
        below.append(mb - 1)  # sign and magnitude: one less is the float32 next to m towards zero
        above.append(mb + 1)
    return {"values": values, "ties": ties, "below": below, "above": above}


def sixteen_bit_values(dtype):
    pats = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.int16)
    return torch.from_numpy(pats.copy()).view(dtype).to(torch.float32).numpy()


def convert_from_f32(bits, dtype) -> np.ndarray:
    x = torch.from_numpy(np.array(bits, dtype=np.uint32).view(np.float32).copy())
    return x.to(dtype).view(torch.int16).numpy().view(np.uint16)


def main() -> None:
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden", "half.txt")
    sweep = [(i * 2654435761) & 0xFFFFFFFF for i in range(1 << 20)]
    lines = [
        "# torch's conversions between float32 and bfloat16/float16 (scripts/make_half_golden.py)",
        f"# torch {torch.__version__}, ATEN_CPU_CAPABILITY=default",
    ]
    for name, dtype, max_finite in (("bf16", torch.bfloat16, 0x7F7F), ("f16", torch.float16, 0x7BFF)):
        # 16-bit -> float32: every pattern.
        widened = sixteen_bit_values(dtype)
        data = widened.astype("<f4").tobytes()
        lines.append(f"hash {name}_to_f32 all {1 << 16} {fnv1a(data):016x}")
        for h in (0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0x3F80, 0x7BFF, 0x7F7F,
                  0x7C00, 0xFC00, 0x7F80, 0xFF80, 0x7C01, 0x7E00, 0xFE00, 0x7FFF, 0xFFFF, 0x7F81, 0x7FC0):
            lines.append(f"pair {name}_to_f32 {h:04x} {int(widened[h:h + 1].view(np.uint32)[0]):08x}")
        # float32 -> 16-bit.
        value_of = lambda h, w=widened: w[h] if h < (1 << 16) else np.float32(np.nan)  # noqa: E731
        sets = f32_inputs(max_finite, value_of)
        interleaved = [b for quad in zip(sets["values"], sets["ties"], sets["below"], sets["above"]) for b in quad]
        conv = f"f32_to_{name}"
        outs = {}
        for key, bits in list(sets.items()) + [("sweep", sweep), ("specials", SPECIALS)]:
            outs[key] = convert_from_f32(bits, dtype)
        all_out = np.concatenate([convert_from_f32(interleaved, dtype), outs["sweep"], outs["specials"]])
        lines.append(f"hash {conv} all {len(all_out)} {fnv1a(all_out.astype('<u2').tobytes()):016x}")
        for key in ("values", "ties", "below", "above", "sweep"):
            lines.append(f"hash {conv} {key} {len(outs[key])} {fnv1a(outs[key].astype('<u2').tobytes()):016x}")
        for b, o in zip(SPECIALS, outs["specials"]):
            lines.append(f"pair {conv} {b:08x} {int(o):04x}")
    with open(out_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {out_path}: {len(lines)} lines")


if __name__ == "__main__":
    main()
