"""Training-step and inference cost of the DECA baseline, split by part, with a bare ResNet50 as reference.

    python benchmarks/bench_train.py                  # 224^2, 2 sequences x 5 frames, 2 threads, ICT
    python benchmarks/bench_train.py --size 128 --repeats 2

Training step (coarse stage, every coarse term that is on here, shape consistency included):
the whole step is timed, and each part's forward + backward is timed on its own with leaf inputs:

* encoder: E_c forward + backward of a scalar of its codes;
* face model: ``face_model(shape, exp, pose)`` + camera projection, forward + backward;
* render: the renderer (rasterise, albedo, SH shading) forward + backward;
* losses: the objective's terms given a decoded batch (their own forward + backward).

Targets (issue 13): everything but the encoder <= 30 % of the step; per-frame inference (encoder +
decode incl. render) <= 1.15x a bare ResNet50 forward, and with the detail encoder + decoder <= 1.15x
two ResNet50 forwards. Medians of ``--repeats`` interleaved rounds (at least 5 for inference); the
CPU is printed beside the figures.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from tvface.config import load_config
from tvface.models.reconstructor import build_reconstructor
from tvface.training.objective import Batch, Objective
from tvface.training.precision import cpu_name


def timed_rounds(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of each function in each of ``repeats`` interleaved rounds (after one warm-up call
    each): a reference and the thing compared with it see the same machine load (this machine is
    shared), so per-round ratios are steadier than ratios of separate runs."""
    for fn in fns.values():
        fn()  # warm-up
    out = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - t0)
    return out


def timed_together(fns: dict, repeats: int) -> dict:
    """Median seconds of each function over interleaved rounds (:func:`timed_rounds`)."""
    return {k: statistics.median(v) for k, v in timed_rounds(fns, repeats).items()}


COARSE_TERMS = ("landmark", "eye_closure", "lip_closure", "photometric", "identity", "shape_consistency",
                "reg_shape", "reg_exp", "reg_tex", "reg_light")


def bare_resnet50(encoder) -> torch.nn.Module:
    """torchvision's ResNet50 (classifier included) running the encoder's own trunk modules: the same
    weights and batch-norm statistics, so the reference computes on the same numbers."""
    ref = torchvision.models.resnet50(weights=None)
    ref.conv1, ref.bn1 = encoder.stem[0], encoder.stem[1]
    ref.layer1, ref.layer2, ref.layer3, ref.layer4 = encoder.layers
    return ref.eval()


def coarse_terms_on(objective: Objective) -> list[str]:
    return [k for k in COARSE_TERMS if objective.on(k)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu-demo")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--sequences", type=int, default=2)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args.profile, {"model.image_size": args.size})
    model = build_reconstructor(cfg)
    model.train()
    objective = Objective.build(cfg.loss, quiet=True)
    b, t, s = args.sequences, args.frames, args.size
    n = b * t
    frames = torch.rand(b, t, 3, s, s)
    with torch.no_grad():
        codes0 = model.encode(frames, with_detail=False)
        lm = model.decode(codes0, render=False).lmks_2d
    batch = Batch(image=frames, landmark=torch.cat([lm + 0.02 * torch.randn_like(lm), torch.ones_like(lm[..., :1])],
                                                   -1).unflatten(0, (b, t)), mask=torch.ones(b, t, 1, s, s))
    for p in model.coarse_parameters():
        p.requires_grad_(True)

    def full_step():
        model.zero_grad(set_to_none=True)
        codes = model.encode(frames, with_detail=False)
        terms, _ = objective(model, codes, batch, "coarse")
        sum(terms.values()).backward()

    def encoder_only():
        model.zero_grad(set_to_none=True)
        coarse, _ = model.encoder(frames, with_detail=False)
        coarse.square().mean().backward()

    leaf = {k: v.detach().clone().requires_grad_(True) for k, v in codes0.flat().items()}

    def face_only():
        p = model.params(leaf)
        verts, lm2, lm3, screen = model.geometry(p)
        (verts.square().mean() + lm2.square().mean() + screen.square().mean()).backward()

    with torch.no_grad():
        p0 = model.params({k: v.detach() for k, v in leaf.items()})
        verts0, _, _, screen0 = model.geometry(p0)
        albedo0 = model.albedo_model(p0["tex"])

    def render_only():
        v, sv = verts0.clone().requires_grad_(True), screen0.clone().requires_grad_(True)
        a, light = albedo0.clone().requires_grad_(True), p0["light"].clone().requires_grad_(True)
        out = model.renderer(v, sv, albedo=a, light=light)
        out.images.square().mean().backward()

    def losses_only():  # the objective given the decode (its own decode/render cost subtracted below)
        codes = type(codes0)({k: v.detach().clone().requires_grad_(True) for k, v in codes0.coarse.items()})
        terms, _ = objective(model, codes, batch, "coarse")
        sum(terms.values()).backward()

    n_decodes = 1 + int(objective.on("shape_consistency") and t > 1)  # the objective decodes this many times
    part = timed_together({"step": full_step, "enc": encoder_only, "face": face_only, "render": render_only,
                        "obj": losses_only}, args.repeats)
    t_step, t_enc, t_face, t_render, t_obj = (part[k] for k in ("step", "enc", "face", "render", "obj"))
    t_loss = max(t_obj - n_decodes * (t_face + t_render), 0.0)
    print(f"CPU: {cpu_name()}, {args.threads} threads, fp32, {cfg.face_model.kind} ({model.face_model.n_verts} verts), "
          f"{b}x{t} frames at {s}^2, coarse stage; terms on: {coarse_terms_on(objective)}")
    print(f"training step          {1000 * t_step / n:8.1f} ms/frame  (100 %)")
    for name, v in (("encoder fwd+bwd", t_enc), (f"face model x{n_decodes}", n_decodes * t_face),
                    (f"render x{n_decodes}", n_decodes * t_render), ("losses", t_loss)):
        print(f"  {name:20s} {1000 * v / n:8.1f} ms/frame  ({100 * v / t_step:5.1f} %)")
    rest = 1 - t_enc / t_step
    print(f"everything but the encoder: {100 * rest:.1f} % of the step (target <= 30 %)")

    # inference: encoder + decode (geometry + render) vs bare ResNet50 forward(s), eval mode, no grad
    model.eval()
    ref, ref_d = bare_resnet50(model.encoder.coarse), bare_resnet50(model.encoder.detail)
    x = frames.flatten(0, 1)
    with torch.no_grad():
        inf = timed_together({"ref": lambda: ref(x), "ref_d": lambda: ref_d(x),
                            "inf": lambda: model.decode(model.encode(frames, with_detail=False)),
                            "inf_d": lambda: model.decode(model.encode(frames, with_detail=True), with_detail=True)},
                           max(args.repeats, 5))
        t_ref, t_ref_d, t_inf, t_inf_d = inf["ref"], inf["ref_d"], inf["inf"], inf["inf_d"]
    print(f"bare ResNet50 forward  {1000 * t_ref / n:8.1f} ms/frame (E_c trunk), {1000 * t_ref_d / n:.1f} (E_d trunk)")
    print(f"inference E_c + decode {1000 * t_inf / n:8.1f} ms/frame  = {t_inf / t_ref:.2f}x ResNet50 (target <= 1.15x)")
    ratio_d = t_inf_d / (t_ref + t_ref_d)
    print(f"inference E_c + E_d + detail decode {1000 * t_inf_d / n:8.1f} ms/frame  = {ratio_d:.2f}x "
          f"two ResNet50s (target <= 1.15x)")


if __name__ == "__main__":
    main()
