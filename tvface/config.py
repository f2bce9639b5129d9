"""Typed configuration: frozen dataclasses loaded from YAML profiles.

A profile (``data/configs/<name>.yaml``) is one :class:`ProfileConfig`. Profiles may inherit with
``base: other.yaml``; keys are merged section by section. Overrides come from papermill parameters
and the CLI as dotted ``section.key=value`` strings (values parsed as YAML). Unknown keys are errors,
paths are resolved relative to the YAML file that names them, and ``${ENV_VAR}`` / ``~`` expand.
There is no module-level config object: constructors take the slice they need.

Each capability owns its section class here so that a profile file reads top to bottom as the
experiment it describes.
"""
from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "data" / "configs"
PROFILES = ("smoke", "cpu-demo", "gpu-full", "paper")


class ConfigError(ValueError):
    """A configuration file or override that cannot be turned into a typed config."""


# --------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class FaceModelConfig:
    """Which parametric face model and how many coefficients of each block."""

    kind: str = "ict"  # "ict" | "flame"; the defaults below are the ICT ones (FLAME/DECA: 100, 50, 50)
    n_shape: int = 30  # FLAME: first 100 of 300 (DECA); ICT: at most the identities built (30 shared)
    n_exp: int = 53  # FLAME: first 50 of 100 (DECA); ICT: always 53 blendshapes
    n_tex: int = 4  # albedo coefficients (FLAME/DECA: 50; tvface's built-in space: 4)
    # Optional explicit files; empty means "look in the assets directory".
    model_path: str = ""
    albedo: str = "auto"  # "auto" (FLAME texture space when present, else built-in) | "builtin" | "flame"


@dataclass(frozen=True)
class RenderConfig:
    image_size: int = 224
    uv_size: int = 256
    backend: str = "torch"  # "torch" | "pytorch3d"


@dataclass(frozen=True)
class DataConfig:
    root: str = "${TVFACE_DATA}/datasets/demo"
    n_frames: int = 5  # T: frames per training sequence (paper: 5)
    image_size: int = 224
    min_sequence_length: int = 10  # the paper's rule: >= 10 frames of one character
    detector: str = "mtcnn"  # "mtcnn" | "dlib"
    # "auto": per face, 2D-FAN when its weights are present, else dlib on near-frontal faces where it agrees
    # with MediaPipe's face mesh, the mesh elsewhere (tvface.data.collect.landmarks) | "fan" | "dlib" | "mediapipe"
    landmarks: str = "auto"
    # A face is flagged (kept, its landmark terms weighted 0 in training) when its confidence = detector
    # score x backend face score x 0.5 ** ((e / landmark_max_error) ** 2) is below landmark_min_confidence;
    # e is the estimated landmark error (mirror test, or dlib's disagreement with the mesh) in % of the
    # frontal eye distance. 12 % is the NME a landmark set must stay within to be useful (issue 17's
    # pass mark); 0.5 flags a face whose estimated error reaches it.
    landmark_max_error: float = 12.0
    landmark_min_confidence: float = 0.5
    landmark_frontal_yaw: float = 30.0  # degrees: dlib is used only within this yaw (the 0-30 bin)
    masks: str = "auto"  # "auto" (BiSeNet when present, else landmark hull) | "bisenet" | "landmarks"
    flow: str = "none"  # "none" | "dis": precomputed optical flow stored beside the frames
    use_shared_media: bool = True  # also run on $TVFACE_SHARED/media when it is set
    # Collection (report sections 4.1-4.2). Defaults are general-purpose, not fitted to any media.
    work_dir: str = "${TVFACE_DATA}/collect/demo"  # intermediate per-source results (resumable)
    # identity descriptors: "auto" (vggface2 when resnet50_ft_weight.pkl is present, else dlib) | "dlib"
    # (128-d, face-recognition-models) | "vggface2" (2048-d VGGFace2 ResNet-50, the user's asset) | "none"
    descriptor: str = "auto"
    descriptor_stride: int = 5  # describe every k-th candidate frame (dlib's ResNet is the slow part)
    cut_threshold: float = 0.5  # Bhattacharyya distance of H-S histograms between frames = a cut
    cut_adaptive_ratio: float = 3.0  # ... or this many times the neighbours' distance (PySceneDetect's
    cut_min: float = 0.25  # AdaptiveDetector: ratio 3, window 2) while above cut_min
    min_face_size: int = 40  # px, shorter box side in the source frame; smaller faces are rejected
    det_score: float = 0.95  # detector confidence for a face to count (MTCNN probability)
    detect_max_side: int = 640  # frames are downscaled to this long side before detection
    identity_threshold: float = 0.6  # dlib descriptor distance: same person below (dlib's own value)
    # VGGFace2 descriptors: cosine distance below which two faces are one person. 0.5 is the threshold of
    # the keras-vggface ResNet-50 (same VGGFace2 weights, avg-pool features) verification example
    # (Brownlee, "How to Perform Face Recognition With VGGFace2 in Keras", 2019); not fitted to any media.
    identity_threshold_vggface2: float = 0.5
    max_gap: int = 2  # missing frames tolerated inside a sequence ("need not be strictly consecutive")
    max_motion: float = 0.5  # box-centre step between kept frames / box size: continuous movement
    max_scale_change: float = 1.5  # box size ratio between kept frames
    crop_scale: float = 1.4  # crop side = crop_scale * box side (DECA's scale range starts at 1.4)
    max_frames_per_source: int = 0  # 0: all; profiles like smoke cap decoding for speed
    demo_frames_per_shot: int = 14  # length of the long shots of the embedded synthetic episode
    val_fraction: float = 0.2  # identities held out by the deterministic split
    split_seed: int = 0
    num_threads: int = 2  # torch CPU threads while collecting (1 is faster on a busy machine)


@dataclass(frozen=True)
class SynthConfig:
    """Synthetic TV sequences with ground truth (``tvface synth``, :mod:`tvface.synthetic`)."""

    n_sequences: int = 200
    n_frames: int = 10
    image_size: int = 224
    seed: int = 0
    oracle: bool = False  # use ground-truth landmarks/masks as training inputs (ablation only)
    root: str = ""  # dataset root; empty: data.root
    gt_root: str = ""  # ground truth, kept apart from the training inputs; empty: <root>-gt
    sequences_per_identity: int = 2
    # Weights of the conditions clean, blur, dark, profile, occlusion, lowres (one per sequence).
    condition_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    max_yaw: float = 70.0  # degrees; profiles turn 45..max_yaw
    perspective: bool = True  # pinhole camera at 0.6-3 m (False: DECA's orthographic camera)
    occluder_prob: float = 0.1  # occluders outside the occlusion condition
    jpeg_prob: float = 0.5  # lower JPEG quality (40-95) outside the clean condition
    supersample: int = 1  # render at supersample x image_size and area-downsample (anti-aliasing)
    workers: int = 2  # processes (results do not depend on it)


@dataclass(frozen=True)
class TemporalConfig:
    """Temporal encoder layout (report Table 1, eq. 6-8); see :mod:`tvface.models.temporal`.

    ``variant: paper`` is the report's exact configuration and is checked field by field
    (:data:`PAPER_TEMPORAL`); the defaults here are the efficient configuration (one trunk shared by
    the coarse and detail encoders, propagation at 56^2, one residual block per refinement).
    """

    variant: str = "efficient"  # "paper" | "efficient" (a label; the fields below define the layout)
    n_frames: int = 5  # T: frames per training window
    n_levels: int = 2  # L: 2L propagation branches (backward_1, forward_1, ...)
    channels: int = 64
    propagation_scale: int = 4  # 2 -> propagation at 112^2 for 224^2 input (paper), 4 -> 56^2
    # Stride of the first 3x3 conv (paper 1: g^0 at the input resolution). 2 starts down1 at half the
    # input size, as ResNet's stem does: at 224^2 the trunk's full-resolution start (head conv, one
    # residual block, two stride-2 convs) cost 1.4x a whole ResNet50, forward + backward (259 vs 185
    # ms/frame on 2 AMD EPYC cores), 37 ms/frame with stride 2 (benchmarks/bench_temporal_train.py).
    head_stride: int = 2
    head_blocks: int = 1  # residual blocks of down1 (after the head conv; paper 5, at the input resolution)
    n_blocks: int = 1  # residual blocks of each propagation refinement R (paper 5)
    fusion_blocks: int = 1  # residual blocks of the fusion R (eq. 8; paper 5)
    down2_blocks: int = 1  # residual blocks of down2 (paper 5)
    dense_refinement: bool = False  # R sees g_i + all earlier branches (paper/BasicVSR++) vs eq. 7
    # Ablations (issue 14; the report: both true): second_order false -> first-order propagation (the i-2
    # neighbour is zeros); flow_guided false -> the deformable offsets are learned from features alone
    # (zero flows: no pre-warp, no flow prior).
    second_order: bool = True
    flow_guided: bool = True
    deform_groups: int = 8  # DCNv2 deformable groups (paper 16)
    offset_channels: int = 32  # width of the offset-predicting CNN (paper: channels)
    max_residue: float = 10.0  # residual offset bound, 10 * tanh (BasicVSR++)
    shared_trunk: bool = True  # one temporal trunk for E_Tc and E_Td (paper: two encoders)
    fc_dim: int = 1024  # DECA's hidden fully connected width
    flow: str = "dis"  # "spynet" | "dis"
    flow_size: int = 112  # flows computed on frames resized to flow_size^2 (the report: 112)
    # Sliding-window inference: windows of n_frames every window_stride frames; None: n_frames (windows
    # side by side, each frame propagated once; resolved on load). Inference only (a trained run serves
    # any stride). On the cpu-demo study's tuning part strides 1, 3 and 5 gave the same vertex error
    # (3.40 mm) and acceleration error (0.759-0.761 mm/frame^2, 3 seeds), while stride 3 propagates each
    # frame ~1.7 times: coarse inference at 224^2 cost 2.53x the per-frame model at stride 5, 2.97x at
    # stride 3 (2 AMD EPYC threads; tvface study --window-strides, benchmarks/bench_temporal_train.py).
    window_stride: int | None = None
    # Initial weights of the trunk's plain convolutions: "he" (He et al. 2015, fan-in, for the LeakyReLU(0.1)
    # that follows; biases 0) keeps the image's signal through the stack; "pytorch" (PyTorch's default,
    # as BasicVSR++) shrinks it ~3x in variance per layer until the biases dominate (tvface.models.temporal).
    init: str = "he"
    # Training schedule, read by the training loop (BasicVSR++'s SPyNet handling).
    lr: float = 1e-4
    spynet_unfreeze_step: int = -1  # -1: SPyNet stays frozen; else unfreeze at this step
    spynet_lr_mult: float = 0.25

    def __post_init__(self) -> None:
        if self.variant not in ("paper", "efficient"):
            raise ConfigError(f"temporal.variant={self.variant!r}; expected 'paper' or 'efficient'")
        if self.propagation_scale not in (2, 4):
            raise ConfigError(f"temporal.propagation_scale={self.propagation_scale}; expected 2 or 4")
        if self.head_stride not in (1, 2) or self.head_stride > self.propagation_scale // 2:
            raise ConfigError(f"temporal.head_stride={self.head_stride}; expected 1, or 2 with propagation_scale 4 "
                              f"(got propagation_scale {self.propagation_scale})")
        if self.init not in ("he", "pytorch"):
            raise ConfigError(f"temporal.init={self.init!r}; expected 'he' or 'pytorch'")
        if self.flow not in ("dis", "spynet"):
            raise ConfigError(f"temporal.flow={self.flow!r}; expected 'dis' or 'spynet'")
        if self.deform_groups % 2 or (2 * self.channels) % self.deform_groups:
            raise ConfigError(f"temporal.deform_groups={self.deform_groups} must be even and divide "
                              f"2 * channels = {2 * self.channels}")
        if self.window_stride is None:
            object.__setattr__(self, "window_stride", self.n_frames)
        if not 1 <= self.window_stride <= self.n_frames:
            raise ConfigError(f"temporal.window_stride={self.window_stride} must be in 1..n_frames "
                              f"({self.n_frames}) so that windows overlap or touch")
        self.check_paper()

    def check_paper(self) -> None:
        """For ``variant: paper``, raise unless every architecture key has the report's value
        (called by the temporal encoder constructors)."""
        if self.variant == "paper":
            wrong = {k: getattr(self, k) for k, v in PAPER_TEMPORAL.items() if getattr(self, k) != v}
            if wrong:
                raise ConfigError(f"temporal.variant=paper fixes the report's layout; these keys differ: "
                                  f"{wrong} (paper values: { {k: PAPER_TEMPORAL[k] for k in wrong} }). "
                                  "Use variant: efficient for other layouts.")


# The report's temporal encoder (Table 1): T=5, L=2, 64 channels, propagation at 112^2, 5 residual
# blocks everywhere, 16 deformable groups, dense refinement as its code and BasicVSR++, two encoders.
PAPER_TEMPORAL = dict(n_frames=5, n_levels=2, channels=64, propagation_scale=2, head_stride=1, head_blocks=5,
                      n_blocks=5, fusion_blocks=5, down2_blocks=5, dense_refinement=True,
                      deform_groups=16, offset_channels=64, max_residue=10.0, shared_trunk=False,
                      fc_dim=1024, second_order=True, flow_guided=True)


@dataclass(frozen=True)
class ModelConfig:
    """The reconstructor (DECA's E_c + E_d + D, or the temporal encoders): :mod:`tvface.models.reconstructor`."""

    encoder: str = "resnet"  # "resnet" (DECA's per-frame ResNet50 pair) | "temporal" (E_Tc + E_Td)
    image_size: int = 224  # encoder input side; frames are resized to it (DECA: 224)
    detail_size: int = 128  # detail code (DECA: 128)
    fc_dim: int = 1024  # DECA's hidden width of the code MLP
    detail_scale: float = 0.01  # DECA's ``out_scale``: displacement = tanh(...) * detail_scale (model units)
    init_scale: float = 0.1  # the code layer's initial weights are scaled by this (small initial codes)
    cam_prior: tuple[float, ...] = (8.0, 0.0, 0.0)  # added to the cam code: a face filling the crop at rest
    light_prior: float = 3.5449077  # added to SH band 0 (sqrt(4 pi): white irradiance 1); DECA's weights: 0
    checkpoint: str = ""  # initial weights: a tvface checkpoint or DECA's deca_model.tar ("" = random)
    # Random initialisation seed (-1: train.seed). The parts both encoders have (ResNet50 layer1-4 and the
    # code MLP of each code, the detail decoder) start from the same numbers for the same seed, so a
    # per-frame and a temporal run of one seed differ only in what the temporal encoder adds.
    init_seed: int = -1
    # ResNet50 trunks' starting weights: "auto" = torchvision's ImageNet ResNet50 (DECA's start) when its
    # file is in TVFACE_ASSETS (asset imagenet_resnet50), else random; "random"; or a path to such a file.
    encoder_init: str = "auto"
    # The encoders' normalisation (tvface.models.norm): "auto" = BatchNorm when the trunks start from
    # ImageNet or DECA's weights, GroupNorm(32) when they start from random weights (batches of 2
    # sequences x 5 frames defeat BatchNorm); "batch" (DECA, the report) or "group" to force one.
    norm: str = "auto"

    def __post_init__(self) -> None:
        if self.norm not in ("auto", "batch", "group"):
            raise ConfigError(f"model.norm={self.norm!r}; expected 'auto', 'batch' or 'group'")
        if self.encoder not in ("resnet", "temporal"):
            raise ConfigError(f"model.encoder={self.encoder!r}; expected 'resnet' or 'temporal'")
        if len(self.cam_prior) != 3:
            raise ConfigError(f"model.cam_prior must be 3 numbers (scale, tx, ty), got {self.cam_prior}")


@dataclass(frozen=True)
class LossConfig:
    """Weights of the report's eq. 9 (coarse) and eq. 10 (detail); 0 switches a term off.

    The defaults are DECA's released training configuration (``decalib/utils/config.py`` and
    ``configs/release_version/deca_*.yml``), which the report follows.
    """

    landmark: float = 1.0  # 68 points, DECA's per-point weights (eye/mouth/nose emphasis)
    eye_closure: float = 1.0  # DECA: lmk eyed
    lip_closure: float = 0.5  # DECA: lipd
    photometric: float = 2.0  # masked by the face-parsing skin mask
    identity: float = 0.2  # VGGFace2 cosine (needs resnet50_ft_weight.pkl)
    shape_consistency: bool = True  # swap shape codes between frames of a sequence, re-score
    reg_shape: float = 1e-4
    reg_exp: float = 1e-4
    reg_tex: float = 1e-4
    reg_light: float = 1.0  # DECA's light regulariser (deviation from white light)
    # detail stage
    photometric_detail: float = 2.0
    mrf: float = 0.05  # ID-MRF on VGG19 relu3_2 + relu4_2 (needs vgg19-dcbb9e9d.pth)
    symmetry: float = 0.005  # soft symmetry of D where the face is not visible
    displacement: float = 0.005  # L1 on D
    smoothness: float = 0.005  # DECA's reg_diff: smooth D
    detail_consistency: bool = True  # swap detail codes between frames of a sequence, re-score
    # robustness
    max_bad_steps: int = 5  # non-finite losses in a row before training stops


@dataclass(frozen=True)
class TrainConfig:
    """Staged training (:mod:`tvface.training`): pretrain (landmarks) -> coarse -> detail (E_c frozen).

    A stage runs ``<stage>_steps`` optimiser steps when > 0, else ``<stage>_epochs`` passes over the
    training sequences. Batches are ``batch_size`` sequences of ``data.n_frames`` frames.
    """

    device: str = "cpu"
    dtype: str = "auto"  # "auto" (bf16 autocast on CUDA or a CPU with AMX, else fp32) | "float32" | "bfloat16"
    # | "float64" (the whole model and batch in double: numerical reference runs and tests, not speed)
    batch_size: int = 2
    steps: int = 10  # legacy total; unused by the staged trainer
    lr: float = 1e-4
    seed: int = 0
    num_workers: int = 0
    pretrain_epochs: int = 10000
    coarse_epochs: int = 500
    detail_epochs: int = 10000
    pretrain_steps: int = 0
    coarse_steps: int = 0
    detail_steps: int = 0
    grad_clip: float = 0.0  # 0: no clipping
    # Linear learning-rate warm-up over each stage's first n steps (0: none, the report's schedule). Adam's
    # first steps move every weight by ~lr whatever its gradient: from random weights the loss jumps first.
    warmup_steps: int = 0
    log_every: int = 10  # TensorBoard scalars every n steps
    image_every: int = 100  # image grids every n steps (0: never)
    checkpoint_every: int = 100  # atomic checkpoint every n steps (and at the end of every stage)
    threads: int = 0  # torch CPU threads (0: leave as is)
    channels_last: bool = True  # CUDA only: encoders and frames in channels_last (faster convolutions on tensor cores)

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps={self.warmup_steps}; expected >= 0")
        if self.dtype not in ("auto", "float32", "bfloat16", "float64"):
            raise ConfigError(f"train.dtype={self.dtype!r}; expected auto, float32, bfloat16 or float64")


@dataclass(frozen=True)
class ProfileConfig:
    """One experiment profile: what the notebooks and the CLI run."""

    name: str = "cpu-demo"
    description: str = ""
    face_model: FaceModelConfig = field(default_factory=FaceModelConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------- loading
_ENV_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type ``tp`` or raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for section {tp.__name__}, got {value!r}")
        return _build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if origin in (list, tuple, Sequence):
        (inner, *_) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string; a user means the number
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown} for {cls.__name__}; valid keys: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _deep_merge(base: dict, top: Mapping) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


# Settings that hold paths: a relative value in a YAML file is relative to that file's folder.
PATH_KEYS = (("face_model", "model_path"), ("model", "checkpoint"), ("data", "root"), ("data", "work_dir"),
             ("synth", "root"), ("synth", "gt_root"))


def _resolve_paths(data: dict, folder: Path) -> dict:
    for section, key in PATH_KEYS:
        value = data.get(section, {}).get(key) if isinstance(data.get(section), Mapping) else None
        if isinstance(value, str) and value and not value.startswith(("/", "~", "$")):
            data[section] = {**data[section], key: str(folder / value)}
    return data


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular 'base:' chain {[str(p) for p in seen]}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}. Profiles live in {CONFIG_DIR} ({', '.join(PROFILES)}).")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    data = _resolve_paths(data, path.parent)
    base = data.pop("base", None)
    if base is None:
        return data
    return _deep_merge(_read_yaml(path.parent / base, seen + (path,)), data)


def parse_overrides(overrides: Sequence[str] | Mapping[str, Any] | None) -> dict:
    """``["render.image_size=112", "train.steps=3"]`` or ``{"render.image_size": 112}`` -> nested dict."""
    if not overrides:
        return {}
    items: list[tuple[str, Any]] = []
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not of the form section.key=value")
            key, raw = item.split("=", 1)
            items.append((key.strip(), yaml.safe_load(raw)))
    nested: dict = {}
    for key, value in items:
        *parents, leaf = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def resolve_profile_path(profile: str | os.PathLike) -> Path:
    """A profile name (``cpu-demo``) or a path to a YAML file."""
    p = Path(profile)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return CONFIG_DIR / f"{profile}.yaml"


def load_config(profile: str | os.PathLike = "cpu-demo",
                overrides: Sequence[str] | Mapping[str, Any] | None = None) -> ProfileConfig:
    """Load a profile by name or path, apply dotted overrides, return a frozen ProfileConfig."""
    path = resolve_profile_path(profile)
    data = _deep_merge(_read_yaml(path), parse_overrides(overrides))
    return _build(ProfileConfig, data, str(path))


# Settings added after runs were saved without them, with the value those runs were made with: a stored
# config that lacks one of these keys is read with this value (not today's default).
LEGACY_VALUES = {"temporal.init": "pytorch", "temporal.head_stride": 1}


def with_legacy_values(stored: Mapping[str, Any]) -> dict:
    """A stored config (nested dict) with :data:`LEGACY_VALUES` filled in where it lacks them."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in stored.items()}
    for key, value in LEGACY_VALUES.items():
        sec, name = key.split(".")
        if isinstance(out.get(sec), dict):
            out[sec].setdefault(name, value)
    return out


def config_to_dict(cfg: Any) -> dict:
    """Plain-dict form (for saving beside checkpoints and printing)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: Path) -> None:
    from tvface.io.atomic import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def expand_path(value: str | os.PathLike) -> Path:
    """Expand ``~`` and ``${VAR}`` in a path setting; tvface's own variables have defaults
    (see :mod:`tvface.settings`), unknown variables are an error naming the setting."""
    from tvface.settings import env_defaults

    env = {**env_defaults(), **os.environ}

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in env:
            raise ConfigError(f"path setting {value!r} uses ${{{name}}}, which is not set")
        return env[name]

    return Path(os.path.expanduser(_ENV_VAR.sub(sub, str(value))))
