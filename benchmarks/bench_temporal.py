"""Temporal encoder cost: FLOP/parameter table and measured CPU time against DECA's ResNet50 encoder.

    python benchmarks/bench_temporal.py                       # 224^2, B=1, T=5, 2 threads
    python benchmarks/bench_temporal.py --size 112 --no-paper # quicker

FLOPs are counted with torch.utils.flop_counter.FlopCounterMode (convs, matmuls; our deformable
conv's im2col matmul is counted, its bilinear gathering is not). "Per encoder" for the efficient
configuration is the pair (shared trunk, coarse head, detail head) divided by two, compared with one
ResNet50 encoder; the paper configuration is one encoder (E_Tc). Times are fp32 forward and
forward+backward per frame, medians, measured in the same run; flows are precomputed (zero) so that
the table measures the network.
"""
from __future__ import annotations

import argparse

import torch

from tvface.models.cost import flop_table, time_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-paper", action="store_true", help="skip the (slow) paper configuration timing")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"input 1x{args.frames}x3x{args.size}x{args.size}, fp32, {args.threads} threads")
    for r in flop_table(args.size, args.frames, True):
        print(f"  {r['model']:45s} {r['params_M']:7.1f} M params  "
              f"{r['gflop_per_frame_per_encoder']:7.1f} GFLOP/frame/encoder")
    for r in time_table(args.size, args.frames, args.repeats, not args.no_paper):
        print(f"  {r['model']:45s} fwd {r['fwd_ms_per_frame_per_encoder']:8.1f} ms  fwd+bwd "
              f"{r['fwd_bwd_ms_per_frame_per_encoder']:8.1f} ms/frame/encoder  "
              f"{r['fwd_bwd_ratio_to_resnet']:.2f}x ResNet50")

if __name__ == "__main__":
    main()
