"""Renderer speed: ms per frame for 224x224 images, batch 10, forward and forward + backward.

    python benchmarks/bench_render.py [--threads 2] [--batch 10] [--size 224] [--repeats 5] [--profile]

Renders the ICT model's face region (skin triangles; ~22k) when the built model file is present,
else a procedural ~22k-triangle head-like mesh (and says so). Image render = rasterise + interpolate
UVs/normals + texture sample + SH shading; backward reaches vertices, the UV albedo map and the light.
A reference network (torchvision ResNet-50 forward at 224^2) is timed in the same run.
"""
from __future__ import annotations

import argparse
import time

import torch

from tvface import settings
from tvface.rendering import MeshRenderer, orth_to_screen, pytorch3d_available
from tvface.rendering.procedural import head_like_mesh

UV_SIZE = 256


def load_mesh() -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    path = settings.assets_dir() / "ict_facekit_model.npz"
    if path.is_file():
        from tvface.face_models.ict import load_ict_model

        model = load_ict_model(path)
        verts = model(**model.zeros(1)).verts[0]
        keep = model.skin_faces
        return (f"ICT face region ({int(keep.sum())} skin triangles of {model.faces.shape[0]})", verts,
                model.faces[keep], model.uv_coords, model.uv_faces[keep])
    verts, faces, uv = head_like_mesh()
    return (f"procedural head-like mesh ({faces.shape[0]} triangles; ICT model not found at {path})",
            verts, faces, uv, faces)


def timed(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def bench(device: str, backend: str, args, mesh) -> dict[str, float]:
    _, verts, faces, uv, uv_faces = mesh
    renderer = MeshRenderer(faces, uv, uv_faces, image_size=args.size, uv_size=UV_SIZE, backend=backend).to(device)
    g = torch.Generator().manual_seed(0)
    batch = args.batch
    # Head about 80% of the image: cam scale such that the face spans ~1.6 screen units, jittered per frame.
    scale = 1.6 / float(verts[:, 1].max() - verts[:, 1].min())
    cam = torch.tensor([[scale, 0.0, 0.0]]).repeat(batch, 1) + torch.randn(batch, 3, generator=g) * 0.01
    verts_b = (verts[None].repeat(batch, 1, 1) + torch.randn(batch, *verts.shape, generator=g) * 1e-4).to(device)
    cam = cam.to(device)
    albedo = torch.rand(batch, 3, UV_SIZE, UV_SIZE, generator=g).to(device)
    light = (torch.randn(batch, 9, 3, generator=g) * 0.1).to(device)
    light[:, 0] += 3.0

    def forward():
        with torch.no_grad():
            return renderer(verts_b, orth_to_screen(verts_b, cam), albedo, light).images

    v, a, li = verts_b.clone().requires_grad_(), albedo.clone().requires_grad_(), light.clone().requires_grad_()

    def forward_backward():
        out = renderer(v, orth_to_screen(v, cam), a, li).images
        out.square().mean().backward()

    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            forward_backward()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    with torch.no_grad():
        covered = renderer.rasterize(orth_to_screen(verts_b, cam)).pix_idx.numel() / batch
    return {"fwd": timed(forward, args.repeats, device) * 1e3 / batch,
            "fwd_bwd": timed(forward_backward, args.repeats, device) * 1e3 / batch, "covered": covered}


def reference(device: str, args) -> float:
    import torchvision

    net = torchvision.models.resnet50().eval().to(device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    with torch.no_grad():
        return timed(lambda: net(x), max(2, args.repeats // 2), device) * 1e3 / args.batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table (CPU, fwd+bwd)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mesh = load_mesh()
    print(f"mesh: {mesh[0]}; image {args.size}x{args.size}, batch {args.batch}, uv {UV_SIZE}, "
          f"torch {torch.__version__}, {args.threads} CPU threads")
    runs = [("cpu", "torch")]
    if torch.cuda.is_available():
        runs.append(("cuda", "torch"))
        if pytorch3d_available():
            runs.append(("cuda", "pytorch3d"))
    else:
        print("GPU: not available in this run")
    if not pytorch3d_available():
        print("pytorch3d: not importable, backend not timed")
    for device, backend in runs:
        ref = reference(device, args)
        res = bench(device, backend, args, mesh)
        print(f"{device:4s} {backend:9s}: forward {res['fwd']:6.2f} ms/frame, forward+backward {res['fwd_bwd']:6.2f} "
              f"ms/frame ({res['covered']:.0f} covered px/frame) | ResNet-50 forward {ref:6.2f} ms/frame "
              f"-> render fwd+bwd / ResNet-50 = {res['fwd_bwd'] / ref:.3f}")


if __name__ == "__main__":
    main()
