"""The non-learned baselines: fit a face model to detected 2D landmarks, frame by frame.

``fit_landmarks`` optimises shape, expression, pose (6) and DECA's weak-perspective camera
(scale, tx, ty) of every frame so that ``orth_to_screen(model(...).lmks_2d, cam)`` lands on the
detected landmarks (DECA-normalised screen coordinates, :mod:`tvface.data.dataset`). The loss of
one frame is

    sum_k v_k |p_k - l_k|^2 / sum_k v_k  +  w_shape |shape|^2  +  w_exp |exp|^2

(v: the landmarks' visibility column, p, l: predicted and target screen points). Frames are
independent: Adam updates every number on its own, so fitting N frames together gives the same
result as fitting them one at a time, only faster. ``rigid_only`` keeps shape and expression at
zero (the "mean face" baseline: the neutral mean face posed and placed on the landmarks, so its
landmark error is meaningful).

Schedule: the camera starts from the landmarks' box (scale from the extent of the target over the
extent of the mean face's landmarks, translation from the centres), then ``rigid_iters`` steps fit
the global rotation and camera, then ``iters`` steps fit everything (jaw included). Learning rates
decay with a cosine to 5 % in each stage, so the last steps do not jitter. The camera's translation
is optimised as the screen position of the rotated landmark centroid (:func:`_camera`).

Limits: the dynamic jaw contour picks a silhouette vertex by argmax, so a contour landmark can
settle on a neighbouring candidate (a local minimum of a few pixels on that point only); 2D
landmarks alone leave depth-like shape directions to the priors.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import Tensor

from tvface.face_models.base import batch_rodrigues
from tvface.rendering.camera import orth_to_screen

DEFAULT_ITERS = 100
DEFAULT_RIGID_ITERS = 30
# Priors, relative to the landmark term (mean squared screen error: the face spans about one unit,
# one pixel of a 224 crop is 0.009). ICT's and FLAME's shape modes are one sigma per unit. Chosen on
# ICT (16 frames, shape 0.7 sigma, sparse expressions, yaw up to 0.4 rad) for detected landmarks, not
# clean ones. Face-region vertex error, mean face / these priors / weak priors (1e-5, 1e-6):
# clean 2.13 / 1.84 / 1.47 mm, 2 px noise at 224 2.17 / 1.93 / 2.36 mm, 4 px 2.26 / 2.27 / 3.64 mm.
# Weak priors match clean landmarks better (NME 0.6 % instead of 1.2 %) but fit the noise.
# Expressions need the stronger relative prior: 53 blendshapes explain noise easily.
W_SHAPE = 1e-3
W_EXP = 3e-4
# Adam step sizes per block (units: radians, sigma / blendshape weight, log-scale, screen).
LR_POSE = 0.02
LR_SHAPE = 0.05
LR_EXP = 0.03
LR_LOG_SCALE = 0.02
LR_CENTRE = 1e-2  # screen units: about a pixel of a 224 crop
FINAL_LR_FRACTION = 0.05
EXP_BOUNDS = {"ict": (0.0, 1.0)}  # ICT's expressions are blendshape weights; FLAME's are unbounded


def landmark_view(model):
    """A copy of ``model`` that computes only what ``lmks_2d`` needs (ICT), else ``model`` itself.

    ICT's 24,591 vertices cost 25 ms per Adam step for 8 frames on a CPU core; its landmarks read 68
    vertices plus the jaw-contour candidates. The copy keeps the same ``forward`` (same maths, jaw
    blendshapes and contour selection) on those vertices only; its ``verts`` are that subset and its
    ``faces`` are meaningless, so use it for landmarks only. The original model is not modified.
    """
    if model.name != "ict":
        return model
    keep = torch.unique(torch.cat([model.lmk_idx, model.contour_cand.reshape(-1)]))  # (K,)
    remap = torch.full((model.n_verts,), -1, dtype=torch.long, device=keep.device)
    remap[keep] = torch.arange(keep.numel(), device=keep.device)
    view = copy.copy(model)
    view._buffers = dict(model._buffers)  # its own buffer table: assignments below leave `model` alone
    view._parameters = dict(model._parameters)
    view._modules = dict(model._modules)
    view.template = model.template[keep]
    view.identity_basis = model.identity_basis[:, keep]
    view.expression_basis = model.expression_basis[:, keep]
    view.lmk_idx = remap[model.lmk_idx]
    view.contour_cand = remap[model.contour_cand]
    return view


def _check_target(target: Tensor) -> None:
    if target.ndim != 3 or target.shape[1:] != (68, 3):
        raise ValueError(f"target must be (N, 68, 3) DECA-normalised landmarks (x, y, visibility), "
                         f"got {tuple(target.shape)}")


def init_camera(model, target: Tensor) -> Tensor:
    """(N, 3) DECA camera (scale, tx, ty) placing the mean face's landmarks on the target's box.

    Scale: RMS distance of the visible target points from their centre over the same for the mean
    face (zero parameters, model units); translation: moves the mean face's centre onto the target's.
    """
    _check_target(target)
    n = target.shape[0]
    with torch.no_grad():
        z = model.zeros(1, device=target.device, dtype=target.dtype)
        mean = model(z["shape"], z["exp"], z["pose"]).lmks_2d[0, :, :2]  # (68, 2), +y up
    mean = mean * mean.new_tensor([1.0, -1.0])  # y down, as the screen
    w = target[..., 2:].clamp_min(0)  # (N, 68, 1)
    w = torch.where(w.sum(1, keepdim=True) > 0, w, torch.ones_like(w))  # nothing visible: use all
    wsum = w.sum(1)  # (N, 1)
    c_t = (w * target[..., :2]).sum(1) / wsum  # (N, 2)
    c_m = (w * mean[None]).sum(1) / wsum
    rms_t = ((w * (target[..., :2] - c_t[:, None]).square()).sum((1, 2)) / wsum[:, 0]).sqrt()  # (N,)
    rms_m = ((w * (mean[None] - c_m[:, None]).square()).sum((1, 2)) / wsum[:, 0]).sqrt()
    scale = rms_t / rms_m.clamp_min(1e-8)
    # screen = scale * (x + tx, -(y + ty)): tx = cx / s - mx, ty = cy / s - my (both y down here)
    trans = c_t / scale[:, None] - c_m
    trans = trans * trans.new_tensor([1.0, -1.0])  # back to +y up for ty
    return torch.cat([scale[:, None], trans], dim=1).reshape(n, 3)


def landmark_loss(pred: Tensor, target: Tensor) -> Tensor:
    """(N,) visibility-weighted mean squared distance between (N, 68, 2) screen points and targets."""
    w = target[..., 2].clamp_min(0)  # (N, 68)
    d2 = (pred - target[..., :2]).square().sum(-1)  # (N, 68)
    return (w * d2).sum(1) / w.sum(1).clamp_min(1e-8)


def _camera(log_scale: Tensor, centre: Tensor, rot: Tensor, anchor: Tensor) -> Tensor:
    """(N, 3) DECA camera from the optimised variables: log-scale (N, 1) and ``centre`` (N, 2), the
    screen position (x right, y down) of the mean face's landmark centroid ``anchor`` (3,) after the
    global rotation ``rot`` (N, 3).

    Optimising the translation directly couples it with the rotation: yaw turns the face about the
    jaw hinge, about 10 cm behind the landmarks, and slides them sideways, which tx then has to undo.
    Pinning the rotated centroid's screen position decouples the two (Adam converges in far fewer
    steps on clean landmarks).
    """
    scale = log_scale.exp()  # (N, 1)
    turned = batch_rodrigues(rot) @ anchor  # (N, 3)
    trans = centre * centre.new_tensor([1.0, -1.0]) / scale - turned[:, :2]  # (N, 2), +y up
    return torch.cat([scale, trans], 1)


def fit_landmarks(model, target: Tensor, iters: int = DEFAULT_ITERS, rigid_only: bool = False,
                  rigid_iters: int = DEFAULT_RIGID_ITERS, w_shape: float = W_SHAPE,
                  w_exp: float = W_EXP, codes: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Fit shape, expression, pose and camera of N frames to their landmarks (see module docstring).

    Args:
        model: a :class:`tvface.face_models.base.FaceModel`.
        target: (N, 68, 3) DECA-normalised landmarks: x, y in [-1, 1] (x right, y down), visibility.
        iters: Adam steps of the second stage (everything; pose and camera with ``rigid_only``).
        rigid_only: keep shape and expression at their start (zero, or ``codes``).
        rigid_iters: Adam steps of the first stage (global rotation and camera).
        w_shape, w_exp: prior weights (:data:`W_SHAPE`, :data:`W_EXP`).
        codes: optional start ``shape`` (n_shape,) or (N, n_shape) and ``exp`` (n_exp,) or (N, n_exp)
            instead of zeros (fixed with ``rigid_only``: e.g. the training split's average face).
    Returns:
        ``shape`` (N, n_shape), ``exp`` (N, n_exp), ``pose`` (N, 6), ``cam`` (N, 3), detached.
    """
    _check_target(target)
    view = landmark_view(model)
    n, dtype, device = target.shape[0], target.dtype, target.device
    z = view.zeros(n, device=device, dtype=dtype)
    for key, value in (codes or {}).items():
        if key not in ("shape", "exp"):
            raise ValueError(f"codes: only 'shape' and 'exp' start values, got {key!r}")
        value = torch.as_tensor(value, dtype=dtype, device=device)
        if value.shape[-1] != z[key].shape[-1] or value.ndim not in (1, 2):
            raise ValueError(f"codes[{key!r}] must be ({z[key].shape[-1]},) or (N, {z[key].shape[-1]}), "
                             f"got {tuple(value.shape)}")
        z[key] = value.expand(n, -1).clone()
    cam0 = init_camera(view, target)
    shape, exp = z["shape"].requires_grad_(), z["exp"].requires_grad_()
    rot, jaw = z["pose"][:, :3].clone().requires_grad_(), z["pose"][:, 3:].clone().requires_grad_()
    with torch.no_grad():  # the rotation centre of the camera parametrisation, see _camera
        anchor = view(z["shape"][:1], z["exp"][:1], z["pose"][:1]).lmks_3d[0].mean(0)  # (3,)
    log_scale = cam0[:, :1].log().requires_grad_()
    centre = (cam0[:, :1] * (anchor[:2] + cam0[:, 1:]) * cam0.new_tensor([1.0, -1.0])).requires_grad_()
    bounds = EXP_BOUNDS.get(model.name)

    def loss_fn() -> Tensor:
        out = view(shape, exp, torch.cat([rot, jaw], 1))
        cam = _camera(log_scale, centre, rot, anchor)
        pred = orth_to_screen(out.lmks_2d, cam)[..., :2]  # (N, 68, 2)
        per_frame = landmark_loss(pred, target) + w_shape * shape.square().sum(1) + w_exp * exp.square().sum(1)
        return per_frame.sum()  # a sum: every frame's gradient is its own

    cam_groups = [{"params": [log_scale], "lr": LR_LOG_SCALE}, {"params": [centre], "lr": LR_CENTRE}]
    stages = [(rigid_iters, [{"params": [rot], "lr": LR_POSE}, *cam_groups])]
    full = [{"params": [rot, jaw], "lr": LR_POSE}, *cam_groups]
    if not rigid_only:
        full += [{"params": [shape], "lr": LR_SHAPE}, {"params": [exp], "lr": LR_EXP}]
    stages.append((iters, full))
    for n_steps, groups in stages:
        if n_steps <= 0:
            continue
        opt = torch.optim.Adam(groups)
        base = [g["lr"] for g in opt.param_groups]
        for step in range(n_steps):
            frac = FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * step / n_steps))
            for g, lr in zip(opt.param_groups, base):
                g["lr"] = lr * frac
            opt.zero_grad(set_to_none=True)
            loss_fn().backward()
            opt.step()
            if bounds is not None:
                with torch.no_grad():
                    exp.clamp_(*bounds)
    with torch.no_grad():
        cam = _camera(log_scale, centre, rot, anchor)
    return {"shape": shape.detach(), "exp": exp.detach(), "pose": torch.cat([rot, jaw], 1).detach(),
            "cam": cam.detach()}


def fit_rigid(model, target: Tensor, iters: int = DEFAULT_ITERS, rigid_iters: int = DEFAULT_RIGID_ITERS,
              codes: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The mean face on the landmarks: :func:`fit_landmarks` with shape and expression fixed at zero,
    or at ``codes`` (global rotation, jaw and camera are fitted)."""
    return fit_landmarks(model, target, iters=iters, rigid_only=True, rigid_iters=rigid_iters, codes=codes)
