"""The training objective of each stage: the report's eq. 9 (coarse) and eq. 10 (detail), weighted by
``cfg.loss``, with the terms whose network is absent switched off (one message, recorded).

Stages (DECA's schedule, which the report follows):

* ``pretrain``: landmark terms only (landmark, eye and lip closure) + shape/expression regularisers;
* ``coarse``: every coarse term: landmarks, photometric (skin mask x coverage), identity (VGGFace2),
  shape consistency (shape codes swapped between the frames of a sequence, re-rendered, re-scored on
  landmarks, photometric and identity), shape/expression/albedo/light regularisers;
* ``detail``: photometric with detail shading, ID-MRF (VGG19), soft symmetry, displacement and
  smoothness regularisers, detail consistency (detail codes swapped within a sequence); the coarse
  encoder is frozen.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from tvface import losses as L
from tvface.config import LossConfig
from tvface.models.reconstructor import Codes, Decoded, Reconstructor

log = logging.getLogger(__name__)
STAGES = ("pretrain", "coarse", "detail")
VGG19_FILE = "vgg19-dcbb9e9d.pth"


@dataclass
class Batch:
    """One training batch: B sequences x T frames, everything at the encoder's size."""

    image: Tensor  # (B, T, 3, S, S)
    landmark: Tensor  # (B, T, 68, 3) DECA-normalised, third column = weight
    mask: Tensor  # (B, T, 1, S, S) face-parsing skin mask
    flows: object | None = None  # SequenceFlows of the windows (temporal encoder), computed once per sequence

    @property
    def flat_image(self) -> Tensor:
        return self.image.flatten(0, 1)

    @property
    def flat_landmark(self) -> Tensor:
        return self.landmark.flatten(0, 1)

    @property
    def flat_mask(self) -> Tensor:
        return self.mask.flatten(0, 1)


@dataclass
class TermStatus:
    on: bool
    weight: float
    reason: str = ""


@dataclass
class Objective:
    """Loss terms of a run and which are on; :meth:`__call__` computes a stage's weighted terms."""

    cfg: LossConfig
    identity_net: object | None = None
    mrf: object | None = None
    status: dict[str, TermStatus] = field(default_factory=dict)

    @classmethod
    def build(cls, cfg: LossConfig, assets_root=None, device="cpu", quiet: bool = False) -> Objective:
        """Load the networks the weights ask for; a missing file switches its term off with one message."""
        from tvface import assets, settings

        status = {name: TermStatus(True, float(getattr(cfg, name))) for name in (
            "landmark", "eye_closure", "lip_closure", "photometric", "identity", "reg_shape", "reg_exp",
            "reg_tex", "reg_light", "photometric_detail", "mrf", "symmetry", "displacement", "smoothness")}
        status["shape_consistency"] = TermStatus(cfg.shape_consistency, 1.0)
        status["detail_consistency"] = TermStatus(cfg.detail_consistency, 1.0)
        for name, st in status.items():
            if st.weight == 0 or not st.on:
                status[name] = TermStatus(False, st.weight, "weight 0 / switched off in config")
        identity_net = mrf = None
        if status["identity"].on:
            path = assets.find("vggface2", assets_root)
            if path is None:
                msg = (f"identity loss off: {assets.get('vggface2').filename} not in "
                       f"{assets_root or settings.assets_dir()} ({assets.get('vggface2').how_to_get})")
                status["identity"] = TermStatus(False, status["identity"].weight, msg)
                if not quiet:
                    log.warning(msg)
            else:
                from tvface.models.vggface2 import load_vggface2

                identity_net = L.VGGFace2Features(load_vggface2(path, device)).to(device)
        if status["mrf"].on:
            root = assets_root or settings.assets_dir()
            path = root / VGG19_FILE
            if not path.is_file():
                msg = (f"ID-MRF loss off: {VGG19_FILE} not in {root} (torchvision's ImageNet VGG19 weights, "
                       f"https://download.pytorch.org/models/{VGG19_FILE})")
                status["mrf"] = TermStatus(False, status["mrf"].weight, msg)
                if not quiet:
                    log.warning(msg)
            else:
                mrf = L.IDMRFLoss(L.load_vgg19(path)).to(device)
        return cls(cfg, identity_net, mrf, status)

    def on(self, name: str) -> bool:
        return self.status[name].on

    def w(self, name: str) -> float:
        return self.status[name].weight

    def manifest(self) -> dict:
        return {k: {"on": v.on, "weight": v.weight, **({"reason": v.reason} if v.reason else {})}
                for k, v in self.status.items()}

    # ------------------------------------------------------------------ terms
    def _landmark_terms(self, dec: Decoded, batch: Batch, out: dict[str, Tensor], suffix: str = "") -> None:
        lmk = batch.flat_landmark
        if self.on("landmark"):
            out["landmark" + suffix] = self.w("landmark") * L.landmark_loss(dec.lmks_2d, lmk)
        if self.on("eye_closure"):
            out["eye_closure" + suffix] = self.w("eye_closure") * L.eye_closure_loss(dec.lmks_2d, lmk)
        if self.on("lip_closure"):
            out["lip_closure" + suffix] = self.w("lip_closure") * L.lip_closure_loss(dec.lmks_2d, lmk)

    def _photo_mask(self, dec: Decoded, batch: Batch) -> Tensor:
        return batch.flat_mask * dec.render.alpha.detach()

    def _appearance_terms(self, dec: Decoded, batch: Batch, out: dict[str, Tensor], suffix: str = "") -> None:
        if self.on("photometric"):
            out["photometric" + suffix] = self.w("photometric") * L.photometric_loss(
                dec.render.images, batch.flat_image, self._photo_mask(dec, batch))
        if self.identity_net is not None:
            alpha = dec.render.alpha.detach()
            composed = dec.render.images * alpha + batch.flat_image * (1 - alpha)  # the face pasted on the frame
            out["identity" + suffix] = self.w("identity") * L.identity_loss(self.identity_net, composed,
                                                                            batch.flat_image)

    def _regularisers(self, codes: dict[str, Tensor], params: dict[str, Tensor], out: dict[str, Tensor],
                      stage: str) -> None:
        if self.on("reg_shape"):
            out["reg_shape"] = self.w("reg_shape") * L.code_regulariser(codes["shape"])
        if self.on("reg_exp"):
            out["reg_exp"] = self.w("reg_exp") * L.code_regulariser(codes["exp"])
        if stage == "coarse":
            if self.on("reg_tex"):
                out["reg_tex"] = self.w("reg_tex") * L.code_regulariser(codes["tex"])
            if self.on("reg_light"):
                out["reg_light"] = self.w("reg_light") * L.light_regulariser(params["light"])

    def coarse(self, model: Reconstructor, codes: Codes, batch: Batch, stage: str) -> tuple[dict[str, Tensor], Decoded]:
        """Terms of ``pretrain`` (landmarks + regularisers) or ``coarse`` (eq. 9)."""
        render = stage == "coarse"
        dec = model.decode(codes, render=render)
        out: dict[str, Tensor] = {}
        self._landmark_terms(dec, batch, out)
        self._regularisers(codes.flat(), dec.params, out, stage)
        if render:
            self._appearance_terms(dec, batch, out)
            t = codes.shape[1]
            if self.on("shape_consistency") and t > 1:
                swapped = model.decode(codes.permuted(_swap_perm(t, codes.coarse["shape"].device), ("shape",)))
                sub: dict[str, Tensor] = {}
                self._landmark_terms(swapped, batch, sub)
                self._appearance_terms(swapped, batch, sub)
                out["shape_consistency"] = sum(sub.values())
        return out, dec

    def detail(self, model: Reconstructor, codes: Codes, batch: Batch) -> tuple[dict[str, Tensor], Decoded]:
        """Terms of the ``detail`` stage (eq. 10); ``codes.coarse`` come from the frozen coarse encoder."""
        dec = model.decode(codes, with_detail=True)
        out: dict[str, Tensor] = {}
        mask = self._photo_mask(dec, batch)
        if self.on("photometric_detail"):
            out["photometric_detail"] = self.w("photometric_detail") * L.photometric_loss(
                dec.render.detail_images, batch.flat_image, mask)
        if self.mrf is not None:
            out["mrf"] = self.w("mrf") * self.mrf(dec.render.detail_images * mask, batch.flat_image * mask)
        uv_mask = model.uv_mask
        if self.on("symmetry"):
            vis = uv_visibility(model, dec)
            out["symmetry"] = self.w("symmetry") * L.soft_symmetry_loss(dec.uv_disp, vis)
        region = _resized(uv_mask, dec.uv_disp)
        if self.on("displacement"):
            out["displacement"] = self.w("displacement") * L.displacement_loss(dec.uv_disp, region)
        if self.on("smoothness"):
            out["smoothness"] = self.w("smoothness") * L.smoothness_loss(dec.uv_disp, region)
        t = codes.shape[1]
        if self.on("detail_consistency") and t > 1 and self.on("photometric_detail"):
            swapped = model.decode(codes.permuted(_swap_perm(t, codes.detail.device), ("detail",)), with_detail=True)
            out["detail_consistency"] = self.w("photometric_detail") * L.photometric_loss(
                swapped.render.detail_images, batch.flat_image, mask)
        return out, dec

    def __call__(self, model: Reconstructor, codes: Codes, batch: Batch, stage: str):
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        return self.detail(model, codes, batch) if stage == "detail" else self.coarse(model, codes, batch, stage)


def _swap_perm(t: int, device) -> Tensor:
    """Frame t takes the codes of frame t+1 (cyclically): every frame gets another frame's code."""
    return torch.roll(torch.arange(t, device=device), -1)


def _resized(mask: Tensor | None, like: Tensor) -> Tensor | None:
    if mask is None:
        return None
    return F.interpolate(mask.to(like.dtype), size=like.shape[-2:], mode="nearest")


def uv_visibility(model: Reconstructor, dec: Decoded) -> Tensor:
    """(N, 1, S, S) texels whose surface faces the camera (UV normals' z > 0), at the displacement's size."""
    from tvface.rendering.mesh import vertex_normals

    with torch.no_grad():
        normals = vertex_normals(dec.verts, model.renderer.faces)
        uv_n = model.renderer.world2uv(normals)  # (N, 3, S, S)
        vis = (uv_n[:, 2:3] > 0).to(dec.uv_disp.dtype)
        return F.interpolate(vis, size=dec.uv_disp.shape[-2:], mode="nearest")
