"""The reconstructor: frames -> named codes -> face model -> camera -> renderer (DECA's pipeline).

One class serves the per-frame baseline and the temporal model: the *encoder* is pluggable
(:class:`PerFrameEncoders`, DECA's E_c + E_d, or :class:`TemporalEncoderPair`, E_Tc + E_Td), the
*decode* is shared. Codes follow DECA's order and names (``decalib/deca.py``, ``decompose_code``)::

    shape (n_shape) | tex (n_tex) | exp (n_exp) | pose (6 = global 3 + jaw 3) | cam (3 = s, tx, ty) | light (27)
    detail (128)

with sizes from the face model's ``param_sizes`` and the albedo space (FLAME as DECA: 100, 50, 50,
6, 3, 27 = 236; ICT: 30, 4, 53, 6, 3, 27 = 123). Decode (eq. 1-4 of DECA):

* geometry: ``face_model(shape, exp, pose)`` -> vertices and 68 landmarks (dynamic contour);
* camera: DECA's weak perspective ``orth_to_screen(points, cam)`` -> screen x right, y down in [-1, 1];
  ``cam = code + model.cam_prior`` (tvface's offset so that random codes start on a face-sized
  camera; zero for DECA's released weights);
* appearance: ``albedo_model(tex)`` x SH irradiance of ``light`` (``light = code + light_prior`` on
  band 0, the same idea) -> rendered image and coverage;
* detail (eq. 3): ``D = DetailDecoder([jaw pose, exp, detail])`` (256^2 UV displacement, DECA's
  ``Generator`` so ``D_detail`` weights load), detail normals and detail-shaded image.

Frames come in as ``(B, T, 3, H, W)`` in [0, 1]; codes come out as ``(B, T, n)``; decode works on
frames flattened to ``N = B * T``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tvface.face_models.base import FaceModel
from tvface.models.norm import resolve_norm, to_group_norm
from tvface.models.resnet_encoder import ResnetEncoder
from tvface.rendering.camera import orth_to_screen
from tvface.rendering.renderer import MeshRenderer, RenderOutput

__all__ = ["CODE_ORDER", "N_LIGHT", "Codes", "Decoded", "DetailDecoder", "PerFrameEncoders",
           "Reconstructor", "TemporalEncoderPair", "build_reconstructor", "code_sizes", "share_initialisation",
           "split_codes"]

CODE_ORDER = ("shape", "tex", "exp", "pose", "cam", "light")
N_LIGHT = 27  # 9 SH coefficients x RGB
SH_BAND0_WHITE = float(np.sqrt(4 * np.pi))  # light[0] giving irradiance 1 (DECA's band-0 constant)


def code_sizes(face_model: FaceModel, n_tex: int) -> dict[str, int]:
    """Coarse code blocks in DECA's order, sized by the face model and the albedo space."""
    p = face_model.param_sizes
    return {"shape": p["shape"], "tex": int(n_tex), "exp": p["exp"], "pose": p["pose"], "cam": 3,
            "light": N_LIGHT}


def split_codes(flat: Tensor, sizes: dict[str, int]) -> dict[str, Tensor]:
    """(..., sum(sizes)) -> named blocks (..., n) in ``sizes``' order."""
    if flat.shape[-1] != sum(sizes.values()):
        raise ValueError(f"code has {flat.shape[-1]} numbers, the blocks {sizes} need {sum(sizes.values())}")
    return dict(zip(sizes, flat.split(list(sizes.values()), dim=-1)))


@dataclass
class Codes:
    """Per-frame codes of a batch of sequences: each block (B, T, n); ``detail`` (B, T, 128) or None."""

    coarse: dict[str, Tensor]
    detail: Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.coarse["shape"].shape[:2])

    def flat(self) -> dict[str, Tensor]:
        """Blocks flattened over frames: (N = B * T, n) each, ``detail`` included when present."""
        out = {k: v.flatten(0, 1) for k, v in self.coarse.items()}
        if self.detail is not None:
            out["detail"] = self.detail.flatten(0, 1)
        return out

    def permuted(self, perm: Tensor, keys: tuple[str, ...]) -> Codes:
        """Codes with the blocks ``keys`` taken from frame ``perm[t]`` of the same sequence (the
        report's shape / detail consistency: swap codes between frames of one character)."""
        coarse = {k: (v[:, perm] if k in keys else v) for k, v in self.coarse.items()}
        detail = self.detail[:, perm] if (self.detail is not None and "detail" in keys) else self.detail
        return Codes(coarse, detail)


@dataclass
class Decoded:
    """What :meth:`Reconstructor.decode` returns for N frames.

    Attributes:
        verts: (N, V, 3) posed model-space vertices (metres).
        lmks_2d: (N, 68, 2) screen landmarks (dynamic contour), DECA-normalised: x right, y down, [-1, 1].
        lmks_3d: (N, 68, 2) screen landmarks of the fixed-vertex set.
        screen_verts: (N, V, 3) screen-space vertices.
        params: the decoded parameters (shape, tex, exp, pose, cam, light (N, 9, 3), detail).
        render: the renderer's output (images, alpha, shape/detail images...), or None.
        albedo: (N, 3, S, S) UV albedo, or None.
        uv_disp: (N, 1, S, S) displacement D, or None.
    """

    verts: Tensor
    lmks_2d: Tensor
    lmks_3d: Tensor
    screen_verts: Tensor
    params: dict[str, Tensor]
    render: RenderOutput | None = None
    albedo: Tensor | None = None
    uv_disp: Tensor | None = None
    extras: dict = field(default_factory=dict)


class DetailDecoder(nn.Module):
    """DECA's detail decoder D (``decalib/models/decoders.py``, ``Generator``): latent -> (N, 1, 256, 256)
    displacement ``tanh(.) * out_scale``. Layer names match DECA's so ``D_detail`` weights load."""

    def __init__(self, latent_dim: int, out_scale: float = 0.01, out_channels: int = 1) -> None:
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.out_scale = float(out_scale)
        self.init_size = 8
        self.l1 = nn.Sequential(nn.Linear(latent_dim, 128 * self.init_size ** 2))
        blocks: list[nn.Module] = [nn.BatchNorm2d(128)]
        for cin, cout in ((128, 128), (128, 64), (64, 64), (64, 32), (32, 16)):  # 8 -> 256
            blocks += [nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(cin, cout, 3, 1, 1),
                       nn.BatchNorm2d(cout, 0.8), nn.LeakyReLU(0.2, inplace=True)]
        blocks += [nn.Conv2d(16, out_channels, 3, 1, 1), nn.Tanh()]
        self.conv_blocks = nn.Sequential(*blocks)

    def forward(self, latent: Tensor) -> Tensor:
        """(N, latent_dim) -> (N, out_channels, 256, 256)."""
        x = self.l1(latent).view(latent.shape[0], 128, self.init_size, self.init_size)
        return self.conv_blocks(x) * self.out_scale


def _check_frames(frames: Tensor) -> None:
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise ValueError(f"frames must be (B, T, 3, H, W), got {tuple(frames.shape)}")


def _scale_last_linear(module: nn.Module, scale: float) -> None:
    last = [m for m in module.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(scale)
        last.bias.zero_()


class PerFrameEncoders(nn.Module):
    """DECA's encoders: E_c (ResNet50 -> coarse code) and E_d (ResNet50 -> detail code), frame by frame."""

    def __init__(self, coarse_size: int, detail_size: int = 128, fc_dim: int = 1024) -> None:
        super().__init__()
        self.coarse = ResnetEncoder(coarse_size, fc_dim)
        self.detail = ResnetEncoder(detail_size, fc_dim)

    def coarse_modules(self) -> list[nn.Module]:
        return [self.coarse]

    def detail_modules(self) -> list[nn.Module]:
        return [self.detail]

    def forward(self, frames: Tensor, with_detail: bool = True) -> tuple[Tensor, Tensor | None]:
        """(B, T, 3, H, W) -> coarse (B, T, n), detail (B, T, 128) or None."""
        _check_frames(frames)
        b, t = frames.shape[:2]
        x = frames.flatten(0, 1)
        coarse = self.coarse(x).unflatten(0, (b, t))
        detail = self.detail(x).unflatten(0, (b, t)) if with_detail else None
        return coarse, detail


class TemporalEncoderPair(nn.Module):
    """The report's temporal encoders E_Tc, E_Td (:class:`tvface.models.temporal.TemporalEncoders`)
    behind the same interface. With a shared trunk, "E_Tc fixed" freezes the trunk and coarse head."""

    def __init__(self, temporal_cfg, coarse_size: int, detail_size: int = 128) -> None:
        super().__init__()
        from tvface.models.temporal import TemporalEncoders

        self.net = TemporalEncoders(temporal_cfg, coarse_size, detail_size)

    def coarse_modules(self) -> list[nn.Module]:
        return [self.net.trunk_c, self.net.head_c]

    def detail_modules(self) -> list[nn.Module]:
        return [m for m in (self.net.trunk_d, self.net.head_d) if m is not None]

    def forward(self, frames: Tensor, with_detail: bool = True, flows=None) -> tuple[Tensor, Tensor | None]:
        _check_frames(frames)
        codes = self.net(frames, flows, with_detail=with_detail)
        return codes.coarse, codes.detail


class Reconstructor(nn.Module):
    """Frames -> codes -> meshes, landmarks and renders, for one face model.

    Args:
        face_model: any :class:`tvface.face_models.base.FaceModel` (ICT, FLAME).
        albedo_model: the UV albedo space (``tex`` code -> (N, 3, S, S)).
        encoder: :class:`PerFrameEncoders` or :class:`TemporalEncoderPair` (built by :func:`build_reconstructor`).
        image_size: encoder input and render size; frames are resized to it.
        uv_size: UV maps (displacement, detail normals).
        detail_size, detail_scale: DECA's detail code size and displacement scale.
        cam_prior: added to the cam code (scale, tx, ty); light_prior: added to band 0 of the light.
        uv_mask: (S, S) where detail applies (DECA's ``uv_face_eye_mask``); fixed_disp: optional (S, S).
        window, window_stride: sliding-window inference of a temporal encoder over long sequences
            (:meth:`encode_sequence`; the training window and ``temporal.window_stride``; None:
            ``window``, windows side by side, as the config's default).

    Attributes:
        windows_per_batch: how many sliding windows :meth:`encode_sequence` runs as one batch (speed
            for memory; the codes are the same).
    """

    def __init__(self, face_model: FaceModel, albedo_model: nn.Module, encoder: nn.Module, image_size: int,
                 uv_size: int = 256, detail_size: int = 128, detail_scale: float = 0.01,
                 cam_prior=(8.0, 0.0, 0.0), light_prior: float = SH_BAND0_WHITE, uv_mask: Tensor | None = None,
                 fixed_disp: Tensor | None = None, render_backend: str = "torch", window: int = 5,
                 window_stride: int | None = None) -> None:
        super().__init__()
        self.window = int(window)
        self.window_stride = self.window if window_stride is None else int(window_stride)
        self.windows_per_batch = 8
        self.face_model = face_model
        self.albedo_model = albedo_model
        self.encoder = encoder
        self.sizes = code_sizes(face_model, albedo_model.n_tex)
        self.detail_size = int(detail_size)
        self.image_size = int(image_size)
        self.renderer = MeshRenderer(face_model.faces, face_model.uv_coords, face_model.uv_faces, image_size,
                                     uv_size, backend=render_backend)
        self.detail_decoder = DetailDecoder(self.sizes["pose"] - 3 + self.sizes["exp"] + detail_size, detail_scale)
        self.register_buffer("cam_prior", torch.tensor(cam_prior, dtype=torch.float32), persistent=False)
        light0 = torch.zeros(9, 3)
        light0[0] = light_prior
        self.register_buffer("light_prior", light0, persistent=False)
        self.register_buffer("uv_mask", None if uv_mask is None else uv_mask.float()[None, None], persistent=False)
        self.register_buffer("fixed_disp", None if fixed_disp is None else fixed_disp.float(), persistent=False)
        for p in list(self.face_model.parameters()) + list(self.albedo_model.parameters()):
            p.requires_grad_(False)

    @property
    def coarse_size(self) -> int:
        return sum(self.sizes.values())

    # ------------------------------------------------------------------ encode
    def prepare(self, frames: Tensor) -> Tensor:
        """Resize (B, T, 3, H, W) frames to the encoder size (area-antialiased bilinear)."""
        _check_frames(frames)
        if frames.shape[-1] == self.image_size and frames.shape[-2] == self.image_size:
            return frames
        b, t = frames.shape[:2]
        x = F.interpolate(frames.flatten(0, 1), size=(self.image_size, self.image_size), mode="bilinear",
                          align_corners=False, antialias=True)
        return x.unflatten(0, (b, t))

    def encode(self, frames: Tensor, with_detail: bool = True, **kwargs) -> Codes:
        """(B, T, 3, H, W) in [0, 1] -> :class:`Codes` (blocks (B, T, n))."""
        coarse, detail = self.encoder(self.prepare(frames), with_detail=with_detail, **kwargs)
        return Codes(split_codes(coarse, self.sizes), detail)

    @property
    def temporal(self) -> bool:
        return isinstance(self.encoder, TemporalEncoderPair)

    def encode_sequence(self, frames: Tensor, with_detail: bool = True) -> Codes:
        """Codes for every frame of whole sequences (B, N, 3, H, W), any N >= 1.

        A per-frame encoder sees each frame on its own. A temporal encoder runs in windows of
        ``window`` frames every ``window_stride`` frames, and each frame takes its code from the
        window where it is most central (:meth:`tvface.models.temporal.TemporalEncoders.encode_windows`),
        so the first and last frames get one too and the result does not depend on how long N is
        beyond the window. Flows are estimated once for the whole sequence and sliced per window;
        only the propagation runs once per window, the rest once per frame.
        """
        if not self.temporal:
            return self.encode(frames, with_detail=with_detail)
        frames = self.prepare(frames)
        codes = self.encoder.net.encode_windows(frames, self.window, self.window_stride, with_detail=with_detail,
                                                windows_per_batch=self.windows_per_batch)
        return Codes(split_codes(codes.coarse, self.sizes), codes.detail)

    # ------------------------------------------------------------------ decode
    def params(self, codes: dict[str, Tensor]) -> dict[str, Tensor]:
        """Flat codes (N, n) -> model parameters (priors added, light reshaped to (N, 9, 3))."""
        out = dict(codes)
        out["cam"] = codes["cam"] + self.cam_prior.to(codes["cam"].dtype)
        out["light"] = codes["light"].reshape(-1, 9, 3) + self.light_prior.to(codes["light"].dtype)
        return out

    def geometry(self, p: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(verts, lmks_2d, lmks_3d, screen_verts) of decoded parameters."""
        out = self.face_model(p["shape"], p["exp"], p["pose"])
        screen = orth_to_screen(out.verts, p["cam"])
        return (out.verts, orth_to_screen(out.lmks_2d, p["cam"])[..., :2],
                orth_to_screen(out.lmks_3d, p["cam"])[..., :2], screen)

    def displacement(self, p: dict[str, Tensor]) -> Tensor:
        """DECA's eq. 3 input: D from [jaw pose, exp, detail] (DECA's order) -> (N, 1, 256, 256)."""
        return self.detail_decoder(torch.cat([p["pose"][:, 3:], p["exp"], p["detail"]], dim=1))

    def decode(self, codes: dict[str, Tensor] | Codes, render: bool = True, with_detail: bool = False,
               with_shape: bool = False, background: Tensor | None = None) -> Decoded:
        """Decode flat codes (N, n) (or :class:`Codes`, flattened here).

        ``render``: albedo x SH image and coverage; ``with_detail``: displacement, detail normals and
        detail image (needs the ``detail`` code); ``with_shape``: DECA's grey shape images.
        """
        if isinstance(codes, Codes):
            codes = codes.flat()
        p = self.params(codes)
        verts, lm2, lm3, screen = self.geometry(p)
        dec = Decoded(verts=verts, lmks_2d=lm2, lmks_3d=lm3, screen_verts=screen, params=p)
        if not render:
            return dec
        albedo = self.albedo_model(p["tex"])
        uv_disp = None
        if with_detail:
            if "detail" not in p:
                raise ValueError("with_detail=True needs the detail code (encode with with_detail=True)")
            uv_disp = self.displacement(p)
        dec.albedo = albedo
        dec.uv_disp = uv_disp
        dec.render = self.renderer(verts, screen, albedo=albedo, light=p["light"], background=background,
                                   uv_disp=uv_disp, uv_mask=self.uv_mask, fixed_disp=self.fixed_disp,
                                   with_shape=with_shape)
        return dec

    def forward(self, frames: Tensor, with_detail: bool = False, render: bool = True,
                with_shape: bool = False) -> tuple[Codes, Decoded]:
        codes = self.encode(frames, with_detail=with_detail)
        return codes, self.decode(codes, render=render, with_detail=with_detail, with_shape=with_shape)

    # ------------------------------------------------------------------ helpers for users
    @torch.no_grad()
    def predict(self, frames: Tensor, with_detail: bool = False) -> dict[str, Tensor]:
        """Inference on whole sequences (B, T, 3, H, W), any T (:meth:`encode_sequence`): flat codes,
        vertices (N = B * T, V, 3), screen landmarks (N, 68, 2), camera (N, 3)."""
        codes = self.encode_sequence(frames, with_detail=with_detail)
        dec = self.decode(codes, render=False)
        return {**codes.flat(), "verts": dec.verts, "lmks_2d": dec.lmks_2d, "cam": dec.params["cam"]}

    def coarse_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.encoder.coarse_modules() for p in m.parameters()]

    def detail_parameters(self) -> list[nn.Parameter]:
        ps = [p for m in self.encoder.detail_modules() for p in m.parameters()]
        return ps + list(self.detail_decoder.parameters())

    def describe(self) -> dict:
        """What a checkpoint records to refuse loading into another model/config."""
        return {"face_model": self.face_model.name, "n_verts": self.face_model.n_verts, "code_sizes": self.sizes,
                "detail_size": self.detail_size, "encoder": type(self.encoder).__name__,
                "image_size": self.image_size, "norm": getattr(self, "norm", "batch")}


def detail_uv_mask(face_model: FaceModel, uv_size: int, assets_root=None) -> Tensor | None:
    """DECA's ``uv_face_eye_mask`` for the model: ICT's from its layout, FLAME's from DECA's data files."""
    if hasattr(face_model, "uv_face_eye_mask"):
        return torch.as_tensor(face_model.uv_face_eye_mask(uv_size))
    from tvface import assets

    path = assets.find("flame_uv_face_eye_mask", assets_root)
    if path is None:
        return None
    import cv2

    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise ValueError(f"{path}: not a readable image; replace it with DECA's data/uv_face_eye_mask.png")
    return torch.as_tensor(cv2.resize(m, (uv_size, uv_size), interpolation=cv2.INTER_NEAREST) / 255.0)


def _seeded(seed: int, make):
    """``make()`` under its own RNG stream (``seed``), leaving the global one as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return make()


def share_initialisation(temporal: TemporalEncoderPair, per_frame: PerFrameEncoders) -> list[str]:
    """Copy the parts a temporal pair shares with DECA's per-frame pair into it: ResNet50 layer1-4
    and the code MLP of E_c -> E_Tc's head, of E_d -> E_Td's head. Returns the copied module names.

    What stays the temporal encoder's own: its input head, down1, propagation, fusion and down2
    (and the 1x1 adapter when its width is not ResNet's 64).
    """
    pairs = [("head_c", per_frame.coarse), ("head_d", per_frame.detail)]
    copied = []
    with torch.no_grad():
        for head_name, src in pairs:
            head = getattr(temporal.net, head_name)
            head.resnet.load_state_dict(src.layers.state_dict())
            head.mlp.load_state_dict(src.head.state_dict())
            copied += [f"{head_name}.resnet", f"{head_name}.mlp"]
    return copied


def build_reconstructor(cfg, assets_root=None, face_model: FaceModel | None = None,
                        albedo_model: nn.Module | None = None, seed: int | None = None) -> Reconstructor:
    """The reconstructor a profile describes (``face_model``, ``render``, ``model``, ``temporal``).

    Initialisation is a function of ``seed`` (default ``model.init_seed``, else ``train.seed``) only:
    the per-frame encoders and the detail decoder are drawn from it, and a temporal encoder gets the
    per-frame pair's ResNet layers and code MLPs of the same seed (:func:`share_initialisation`), so
    the two encoders of a fair comparison start from the same shared weights.
    """
    from tvface.face_models.factory import load_albedo_model, load_face_model

    model = face_model if face_model is not None else load_face_model(cfg.face_model, assets_root)
    albedo = albedo_model if albedo_model is not None else load_albedo_model(cfg.face_model, model,
                                                                             cfg.render.uv_size, assets_root)
    sizes = code_sizes(model, albedo.n_tex)
    mc = cfg.model
    if seed is None:
        seed = mc.init_seed if mc.init_seed >= 0 else cfg.train.seed
    per_frame = _seeded(seed, lambda: PerFrameEncoders(sum(sizes.values()), mc.detail_size, mc.fc_dim))
    encoder_init = _encoder_init(mc.encoder_init, assets_root)
    if encoder_init is not None:  # both trunks from ImageNet (DECA's start); a temporal pair shares them below
        from tvface.models.resnet_encoder import load_imagenet_trunk

        for enc in (per_frame.coarse, per_frame.detail):
            load_imagenet_trunk(enc, encoder_init)
    deca_init = str(mc.checkpoint).endswith(".tar")
    norm = resolve_norm(mc.norm, pretrained=encoder_init is not None or deca_init)
    if norm == "group" and deca_init:
        raise ValueError(f"model.norm=group cannot load DECA's weights ({mc.checkpoint}): they are BatchNorm "
                         "weights; use model.norm=batch (or auto)")
    if norm == "group":
        to_group_norm(per_frame)
    if mc.encoder == "resnet":
        encoder = per_frame
    else:
        encoder = _seeded(seed + 1, lambda: TemporalEncoderPair(cfg.temporal, sum(sizes.values()), mc.detail_size))
        if norm == "group":
            to_group_norm(encoder)
        share_initialisation(encoder, per_frame)
    if mc.init_scale != 1.0:
        for m in encoder.coarse_modules()[-1:] + encoder.detail_modules()[-1:]:
            _scale_last_linear(m, mc.init_scale)
    fixed = None
    if model.name == "flame":
        from tvface import assets

        path = assets.find("flame_fixed_displacement", assets_root)
        if path is not None:
            fixed = torch.as_tensor(np.load(path, allow_pickle=False), dtype=torch.float32)
    recon = Reconstructor(model, albedo, encoder, mc.image_size, cfg.render.uv_size, mc.detail_size,
                          mc.detail_scale, tuple(mc.cam_prior), mc.light_prior,
                          detail_uv_mask(model, cfg.render.uv_size, assets_root), fixed, cfg.render.backend,
                          window=cfg.temporal.n_frames, window_stride=cfg.temporal.window_stride)
    decoder = _seeded(seed + 2, lambda: DetailDecoder(recon.detail_decoder.latent_dim, mc.detail_scale))
    recon.detail_decoder.load_state_dict(decoder.state_dict())
    recon.encoder_init = f"imagenet:{encoder_init}" if encoder_init is not None else "random"
    recon.norm = norm
    return recon


def _encoder_init(setting: str, assets_root=None):
    """The ImageNet ResNet50 file ``model.encoder_init`` asks for, or None (random trunks)."""
    from tvface import assets
    from tvface.config import expand_path

    if setting == "random":
        return None
    if setting == "auto":
        return assets.find("imagenet_resnet50", assets_root)
    path = expand_path(setting)
    if not path.is_file():
        raise FileNotFoundError(f"model.encoder_init={setting}: no such file ({path}); use 'auto', 'random' or the "
                                "path of torchvision's resnet50-*.pth")
    return path
