"""User assets: the files tvface cannot ship, where it looks for them and what each enables.

Everything lives in one folder, :func:`tvface.settings.assets_dir` (``$TVFACE_ASSETS``, default
``~/.cache/tvface/assets``), under the documented file names below. ``tvface assets`` prints the
table; loaders call :func:`require` to get a path or one clear error saying how to get the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tvface import settings


@dataclass(frozen=True)
class Asset:
    key: str
    filename: str
    what: str
    enables: str
    how_to_get: str
    required_for_default: bool = False
    is_dir: bool = False

    def path(self, root: Path | None = None) -> Path:
        return (root or settings.assets_dir()) / self.filename

    def present(self, root: Path | None = None) -> bool:
        p = self.path(root)
        return p.is_dir() if self.is_dir else (p.is_file() and p.stat().st_size > 0)


_FLAME_SITE = "register at https://flame.is.tue.mpg.de, download FLAME 2020"
_DECA_DATA = "DECA's data/ folder (github.com/yfeng95/DECA, fetch_data.sh)"

ASSETS: tuple[Asset, ...] = (
    Asset("ict_model", "ict_facekit_model.npz", "ICT-FaceKit model built by tvface",
          "the default face model (offline path, synthetic data, CPU demo)",
          "`tvface assets build-ict` (from $TVFACE_ICT_SOURCE or a pinned download); `make book` does it",
          required_for_default=True),
    Asset("ict_source", "ICT-FaceKit", "ICT-FaceKit folder (MIT)",
          "rebuilding the ICT model with more identity modes",
          "git clone https://github.com/ICT-VGL/ICT-FaceKit into the assets folder", is_dir=True),
    Asset("flame_model", "generic_model.pkl", "FLAME 2020 model (pickle)",
          "the FLAME face model (DECA's configuration, `paper` profile)", f"{_FLAME_SITE}; copy generic_model.pkl"),
    Asset("flame_template", "head_template.obj", "FLAME head template with UVs",
          "FLAME UV maps: albedo, detail displacement", _DECA_DATA),
    Asset("flame_landmarks", "landmark_embedding.npy", "FLAME landmark embedding (pickled)",
          "FLAME 68 landmarks with the dynamic contour", _DECA_DATA),
    Asset("flame_uv_face_mask", "uv_face_mask.png", "FLAME UV face mask",
          "detail losses on FLAME", _DECA_DATA),
    Asset("flame_uv_face_eye_mask", "uv_face_eye_mask.png", "FLAME UV face+eye mask",
          "photometric loss region on FLAME", _DECA_DATA),
    Asset("flame_fixed_displacement", "fixed_displacement_256.npy", "FLAME fixed UV displacement",
          "DECA's detail rendering", _DECA_DATA),
    Asset("flame_mean_texture", "mean_texture.jpg", "FLAME mean UV texture",
          "FLAME rendering without a texture space", _DECA_DATA),
    Asset("flame_texture", "FLAME_texture.npz", "FLAME texture space (optional)",
          "FLAME albedo space", f"{_FLAME_SITE}: FLAME texture space"),
    Asset("flame_albedo_bfm", "FLAME_albedo_from_BFM.npz", "BFM albedo on FLAME UVs (optional)",
          "FLAME albedo space (DECA's default)", "github.com/TimoBolkart/BFM_to_FLAME (needs the BFM licence)"),
    Asset("deca_model", "deca_model.tar", "DECA pretrained weights",
          "DECA baseline inference and fine-tuning from DECA", "DECA's README (Google Drive link)"),
    Asset("vggface2", "resnet50_ft_weight.pkl", "VGGFace2 ResNet50 (pickle)",
          "identity loss; FaceNet/VGGFace2 identity descriptors",
          "github.com/cydonia999/VGGFace2-pytorch (resnet50_ft)"),
    Asset("fan", "2DFAN4-11f355bf06.pth.tar", "face-alignment 2D-FAN weights",
          "2D-FAN landmarks (the paper's detector)",
          "the file face-alignment 1.5 downloads (www.adrianbulat.com/downloads/python-fan/)"),
    Asset("bisenet", "79999_iter.pth", "BiSeNet face parsing weights",
          "face-parsing masks (the paper's masks)", "github.com/zllrunning/face-parsing.PyTorch (79999_iter.pth)"),
    Asset("imagenet_resnet50", "resnet50-0676ba61.pth", "torchvision ImageNet ResNet50 weights",
          "DECA's encoder initialisation (model.encoder_init=auto): the ResNet50 trunks start from ImageNet",
          "torchvision's ResNet50_Weights.IMAGENET1K_V1 file (download.pytorch.org/models/resnet50-0676ba61.pth)"),
    Asset("spynet", "spynet_20210409-c6c1bd09.pth", "SPyNet optical-flow weights",
          "learned optical flow for the temporal encoder (else OpenCV DIS)",
          "BasicVSR++ / mmagic model zoo (spynet_20210409-c6c1bd09.pth)"),
)
ASSETS_BY_KEY = {a.key: a for a in ASSETS}


class AssetMissingError(FileNotFoundError):
    """A user asset is not where tvface looks for it."""


def get(key: str) -> Asset:
    try:
        return ASSETS_BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown asset {key!r}; known: {sorted(ASSETS_BY_KEY)}") from None


def find(key: str, root: Path | None = None) -> Path | None:
    """Path of an asset if present, else None."""
    a = get(key)
    return a.path(root) if a.present(root) else None


def require(key: str, root: Path | None = None) -> Path:
    """Path of an asset, or one clear error naming where it was looked for and how to get it."""
    a = get(key)
    p = a.path(root)
    if not a.present(root):
        state = "is empty" if p.exists() else "was not found"
        raise AssetMissingError(
            f"{a.what}: {p} {state}. It enables {a.enables}. To get it: {a.how_to_get}. "
            f"(The assets folder is $TVFACE_ASSETS, now {p.parent}.)")
    return p


def resolve_backend(setting: str, value: str, learned: str, asset: str, offline: tuple[str, ...],
                    root: Path | None = None) -> str:
    """Resolve a backend setting of the form ``auto | <learned> | <offline...>``.

    ``auto`` picks ``learned`` when its weights (``asset``) are present, else ``offline[0]``; naming
    ``learned`` explicitly requires the weights (one clear error if they are missing).
    """
    if value == "auto":
        return learned if find(asset, root) is not None else offline[0]
    if value == learned:
        require(asset, root)
        return learned
    if value in offline:
        return value
    raise ValueError(f"{setting} must be one of {['auto', learned, *offline]}, got {value!r}")


def status_rows(root: Path | None = None) -> list[dict[str, str]]:
    rows = []
    for a in ASSETS:
        rows.append({"asset": a.filename, "looked for at": str(a.path(root)),
                     "status": "found" if a.present(root) else "missing",
                     "enables": a.enables, "how to get it": a.how_to_get})
    return rows


def format_table(root: Path | None = None, markdown: bool = False) -> str:
    """The ``tvface assets`` table: asset, where it was looked for, found/missing, enables, how to get."""
    rows = status_rows(root)
    cols = list(rows[0])
    if markdown:
        out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(r[c].replace("|", "\\|") for c in cols) + " |" for r in rows]
        return "\n".join(out)
    short = {**{c: c for c in cols}}
    widths = {c: max(len(short[c]), *(len(r[c]) for r in rows)) for c in cols[:3]}
    lines = ["  ".join(short[c].ljust(widths[c]) for c in cols[:3]) + "  enables / how to get it"]
    for r in rows:
        lines.append("  ".join(r[c].ljust(widths[c]) for c in cols[:3]) + f"  {r['enables']}")
        if r["status"] == "missing":
            lines.append(" " * (sum(widths.values()) + 6) + f"  -> {r['how to get it']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- what a profile uses
VGG19_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's ImageNet VGG19 (ID-MRF loss), read from the assets folder


@dataclass(frozen=True)
class Need:
    """One file a profile uses: what for, whether it is here, and what happens without it."""

    filename: str
    role: str
    present: bool
    without: str  # "error: ..." (the run cannot start) or the fallback the run takes
    how_to_get: str = ""

    @property
    def fatal(self) -> bool:
        return self.without.startswith("error")


def profile_needs(cfg, root: Path | None = None) -> list[Need]:
    """The user files profile ``cfg`` reads (training, evaluation, collection), each with its fallback.

    ``gpu-full`` and ``paper`` name the paper's assets (FLAME, DECA's weights, VGGFace2, VGG19, 2D-FAN,
    BiSeNet, SPyNet); ``tvface assets --profile P`` and the start of ``tvface train`` print this list.
    """
    out: list[Need] = []

    def add(key: str, role: str, without: str) -> None:
        a = get(key)
        out.append(Need(a.filename, role, a.present(root), without, a.how_to_get))

    if cfg.face_model.kind == "flame":
        for key in ("flame_model", "flame_template", "flame_landmarks"):
            add(key, "FLAME face model", "error: the FLAME profile cannot build its face model")
        add("flame_uv_face_eye_mask", "detail region (UV)", "detail applies over the whole UV map")
        add("flame_fixed_displacement", "DECA's fixed displacement", "no fixed displacement")
        if cfg.face_model.albedo in ("auto", "flame"):
            present = any(get(k).present(root) for k in ("flame_texture", "flame_albedo_bfm"))
            out.append(Need(f"{get('flame_texture').filename} | {get('flame_albedo_bfm').filename}",
                            "FLAME albedo space", present,
                            "error: face_model.albedo=flame" if cfg.face_model.albedo == "flame"
                            else "tvface's built-in low-rank albedo", get("flame_albedo_bfm").how_to_get))
    else:
        add("ict_model", "ICT-FaceKit face model", "error: `tvface assets build-ict` (make book does it)")
    ckpt = str(cfg.model.checkpoint or "")
    if ckpt.endswith(".tar"):
        out.append(Need(Path(ckpt).name, "DECA's released weights (model.checkpoint)",
                        Path(ckpt).expanduser().is_file(), "error: model.checkpoint names a missing file",
                        get("deca_model").how_to_get))
    elif cfg.model.encoder_init == "auto":
        add("imagenet_resnet50", "ImageNet start of the ResNet50 trunks", "random initialisation")
    if cfg.loss.identity > 0:
        add("vggface2", "identity loss (VGGFace2)", "identity loss off")
    if cfg.loss.mrf > 0:
        root_ = root or settings.assets_dir()
        out.append(Need(VGG19_FILE, "ID-MRF loss (VGG19)", (root_ / VGG19_FILE).is_file(), "ID-MRF loss off",
                        f"https://download.pytorch.org/models/{VGG19_FILE}"))
    if cfg.data.landmarks in ("auto", "fan"):
        add("fan", "2D-FAN landmarks (collection)",
            "error: data.landmarks=fan" if cfg.data.landmarks == "fan" else "dlib's 68-point landmarks")
    if cfg.data.masks in ("auto", "bisenet"):
        add("bisenet", "BiSeNet face-parsing masks (collection)",
            "error: data.masks=bisenet" if cfg.data.masks == "bisenet" else "masks from the landmark hull")
    if cfg.temporal.flow == "spynet":
        add("spynet", "SPyNet flow of the temporal encoder",
            "error with model.encoder=temporal (untrained flow is meaningless; set temporal.flow=dis)")
    return out


def format_needs(needs: list[Need], profile: str) -> str:
    """One line per file: ``found`` / ``MISSING`` and, when missing, what the run does instead."""
    lines = [f"profile {profile}: files it uses ({sum(n.present for n in needs)} of {len(needs)} found)"]
    for n in needs:
        state = "found  " if n.present else "MISSING"
        tail = "" if n.present else f" -> {n.without}" + (f" (get: {n.how_to_get})" if n.how_to_get else "")
        lines.append(f"  {state} {n.filename:34s} {n.role}{tail}")
    return "\n".join(lines)
