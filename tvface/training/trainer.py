"""One trainer for the per-frame and the temporal reconstructor: stages, checkpoints, exact resume.

``Trainer(cfg, out_dir).run(["pretrain", "coarse", "detail"])`` trains the stages in order
(:mod:`tvface.training.objective`), Adam with ``train.lr``; the detail stage freezes the coarse
encoder (DECA's ``E_flame.eval()``; the report's "E_Tc fixed"). Batches are ``train.batch_size``
sequences x ``data.n_frames`` frames of the training split (by identity).

Determinism: the batch of global step ``s`` (which sequences, which start frames) is a function of
``(train.seed, s)`` only, and the checkpoint carries the model, optimiser, RNG states and step, so
"N steps" and "N/2 steps, resume, N/2 steps" give the same weights (``tests/test_training.py``).

Run folder::

    RUN_DIR/last.pt, previous.pt     checkpoints (atomic; see tvface.training.checkpoint)
    RUN_DIR/manifest.json            config, precision, loss terms on/off (and why), data, timings
    RUN_DIR/metrics.jsonl            one line per logged step: stage, step, loss terms, it/s
    RUN_DIR/tb/                      TensorBoard scalars and image grids
"""
from __future__ import annotations

import gc
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tvface.config import ProfileConfig, config_to_dict, expand_path, with_legacy_values
from tvface.data import layout
from tvface.io.atomic import atomic_write_text
from tvface.models.reconstructor import Reconstructor, build_reconstructor
from tvface.training.checkpoint import (
    LAST,
    CheckpointError,
    check_compatible,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from tvface.training.distributed import (
    DistContext,
    StepModule,
    any_rank,
    convert_batchnorm,
    init_from_env,
    mean_over_ranks,
    rank_slice,
    shutdown,
    wrap_ddp,
)
from tvface.training.objective import STAGES, Batch, Objective
from tvface.training.precision import cpu_name, resolve_precision

log = logging.getLogger(__name__)
TRAINABLE_PREFIXES = ("encoder.", "detail_decoder.")


class TrainingError(RuntimeError):
    """Training cannot go on (bad data, repeated non-finite losses); the message says why and what to do."""


def trainable_state(model: Reconstructor) -> dict[str, torch.Tensor]:
    """The learned part of the model (encoders, detail decoder): face model and renderer are rebuilt."""
    return {k: v for k, v in model.state_dict().items() if k.startswith(TRAINABLE_PREFIXES)}


def load_trainable_state(model: Reconstructor, state: dict[str, torch.Tensor], path: Path) -> None:
    own = trainable_state(model)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
              for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{path}: weights do not fit this model: missing {missing[:8]}"
                              f"{'...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}, "
                              f"shape mismatches {shapes[:8]}")
    model.load_state_dict(state, strict=False)


# --------------------------------------------------------------------------- data
class TrainData:
    """The training split as batches of sequences, deterministic in the global step.

    Frames and masks are resized once to the encoder's size and kept in memory (uint8 / float16).
    With a ``flow_estimator`` (the temporal encoder's), the flows between neighbouring frames are
    computed once per sequence on those frames and kept (float16); a window's flows are slices of them
    (flow i -> i+1 does not depend on the window), so no step recomputes a flow.
    """

    def __init__(self, cfg: ProfileConfig, split: str = "train", root: Path | None = None,
                 flow_estimator=None) -> None:
        from tvface.data.dataset import SequenceDataset, normalize_landmarks

        self.root = Path(root) if root is not None else expand_path(cfg.data.root)
        self.n_frames = cfg.data.n_frames
        self.size = cfg.model.image_size
        self.seed = cfg.train.seed
        self.batch_size = cfg.train.batch_size
        self._normalize = normalize_landmarks
        seqs = layout.list_sequences(self.root)
        if not seqs:
            raise TrainingError(f"no sequences under {self.root} (expected <identity>/<sequence>/manifest.json). "
                                "Make data first: `tvface synth generate --profile PROFILE` (synthetic) or "
                                "`tvface collect run VIDEO --root ROOT` (TV), or set data.root.")
        self.ds = SequenceDataset(self.root, self.n_frames, split, cfg.data.val_fraction, cfg.data.split_seed)
        if len(self.ds) == 0:
            lengths = [len(layout.frame_stems(s)) for s in seqs]
            raise TrainingError(f"{self.root}: no {split}-split sequence has the {self.n_frames} frames a training "
                                f"window needs ({len(seqs)} sequences, longest {max(lengths)} frames, split by "
                                f"identity with data.val_fraction={cfg.data.val_fraction}). Add data, or lower "
                                "data.n_frames.")
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.flow_estimator = flow_estimator
        self._flows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.ds)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.ds) / self.batch_size))

    def _sequence(self, idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if idx not in self._cache:
            seq_dir, stems = self.ds.sequences[idx]
            self.ds.n_frames = len(stems)
            item = self.ds.load_frames(idx, 0)
            self.ds.n_frames = self.n_frames
            img = item["image"]  # (L, 3, S0, S0)
            mask = item["mask"][:, None]  # (L, 1, S0, S0)
            if img.shape[-1] != self.size:
                img = F.interpolate(img, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                    antialias=True)
                mask = F.interpolate(mask, size=(self.size, self.size), mode="area")
            self._cache[idx] = ((img.clamp(0, 1) * 255).round().to(torch.uint8), mask.half(), item["landmark"])
        return self._cache[idx]

    def _sequence_flows(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(to_prev, to_next), each (L-1, 2, h, w) float16, of the whole sequence ``idx``."""
        if idx not in self._flows:
            img = self._sequence(idx)[0]
            with torch.no_grad():
                fl = self.flow_estimator(img[None].float() / 255)
            self._flows[idx] = (fl.to_prev[0].half(), fl.to_next[0].half())
        return self._flows[idx]

    def indices(self, step: int) -> list[tuple[int, int]]:
        """(sequence index, start frame) of the batch of global step ``step``."""
        n = len(self.ds)
        epoch, pos = divmod(step, self.steps_per_epoch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)).tolist()
        chosen = perm[pos * self.batch_size:(pos + 1) * self.batch_size]
        if len(chosen) < min(self.batch_size, n):  # last partial batch: fill from the start of the permutation
            chosen += perm[:min(self.batch_size, n) - len(chosen)]
        rng = np.random.default_rng([self.seed, step])
        out = []
        for i in chosen:
            length = len(self.ds.sequences[i][1])
            out.append((i, int(rng.integers(length - self.n_frames + 1))))
        return out

    def batch(self, step: int, device: torch.device | str = "cpu", dist: DistContext | None = None) -> Batch:
        """The batch of global step ``step``; with ``dist``, this rank's contiguous share of its sequences."""
        imgs, lmks, masks = [], [], []
        chosen = self.indices(step)
        if dist is not None and dist.enabled:
            chosen = chosen[rank_slice(len(chosen), dist)]
        for i, s in chosen:
            img, mask, lmk = self._sequence(i)
            imgs.append(img[s:s + self.n_frames])
            masks.append(mask[s:s + self.n_frames])
            lmks.append(lmk[s:s + self.n_frames])
        flows = None
        if self.flow_estimator is not None:
            from tvface.models.flow import SequenceFlows

            t = self.n_frames - 1
            pairs = [(self._sequence_flows(i), s) for i, s in chosen]
            flows = SequenceFlows(*(torch.stack([f[k][s:s + t] for f, s in pairs]).float().to(device) for k in (0, 1)))
        return Batch(image=(torch.stack(imgs).float() / 255).to(device), landmark=torch.stack(lmks).to(device),
                     mask=torch.stack(masks).float().to(device), flows=flows)


# --------------------------------------------------------------------------- trainer
@dataclass
class StageResult:
    stage: str
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    skipped: int


class Trainer:
    """Staged training of a :class:`Reconstructor` on a profile (see the module docstring)."""

    def __init__(self, cfg: ProfileConfig, out_dir: Path, assets_root: Path | None = None, progress: bool = True,
                 data_root: Path | None = None, model: Reconstructor | None = None,
                 dist: DistContext | None = None, quiet: bool = False) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.dist = dist or DistContext()
        self.progress = progress and self.dist.is_main
        tc = cfg.train
        if tc.threads > 0:
            torch.set_num_threads(tc.threads)
        if tc.device == "cuda" and not torch.cuda.is_available():
            raise TrainingError("train.device=cuda but no CUDA device is available; use --set train.device=cpu")
        self.device = torch.device("cuda", self.dist.local_rank) if tc.device == "cuda" else torch.device(tc.device)
        if self.dist.enabled:
            rank_slice(tc.batch_size, self.dist)  # a global batch that does not split: one error before any work
        self.precision = resolve_precision(tc.dtype, self.device)
        torch.manual_seed(tc.seed)
        np.random.seed(tc.seed)
        from tvface import assets

        self.needs = assets.profile_needs(cfg, assets_root)
        missing = [f"{n.filename} ({n.role} -> {n.without})" for n in self.needs if not n.present]
        quiet = quiet or not self.dist.is_main  # quiet: the same warnings were given already (open_run)
        if missing and not quiet:
            log.warning("profile %s runs without: %s", cfg.name, "; ".join(missing))
        self.data = TrainData(cfg, "train", data_root)  # fails here, before any model is built, on bad data
        self.model = (model if model is not None else build_reconstructor(cfg, assets_root)).to(self.device)
        if self.model.temporal:
            self.data.flow_estimator = self.model.encoder.net.flow_estimator
        self.init_report = self._init_weights(assets_root)
        if self.precision.dtype == torch.float64:
            self.model.double()
        if self.dist.enabled:
            convert_batchnorm(self.model)  # BN statistics of the global batch (same state-dict keys)
        if self.device.type == "cuda" and tc.channels_last:
            self.model.encoder.to(memory_format=torch.channels_last)
        self.objective = Objective.build(cfg.loss, assets_root, self.device, quiet=quiet)
        self._step_module = StepModule(self.model, self.objective)
        self._ddp: torch.nn.Module | None = None
        self.global_step = 0
        self.stage = None
        self.stage_step = 0
        self.done: list[dict] = []
        self.resumed_config: dict | None = None  # the config stored in the checkpoint resume() read
        self.optimizer: torch.optim.Optimizer | None = None
        self._writer = None

    # ------------------------------------------------------------------ setup
    def _init_weights(self, assets_root) -> dict:
        path = self.cfg.model.checkpoint
        if not path:
            return {"init": "random", "seed": self.cfg.train.seed,
                    "encoder_trunks": getattr(self.model, "encoder_init", "random")}
        p = expand_path(path)
        if p.name.endswith(".tar") or p.suffix == ".tar":
            from tvface.models.deca_weights import load_deca_weights

            return {"init": str(p), **load_deca_weights(self.model, p)}
        ckpt = load_checkpoint(p)
        check_compatible(ckpt, self.model.describe(), p)
        load_trainable_state(self.model, ckpt["model"], p)
        return {"init": str(p), "from_step": ckpt.get("global_step")}

    def stage_steps(self, stage: str) -> int:
        tc = self.cfg.train
        steps = getattr(tc, f"{stage}_steps")
        return steps if steps > 0 else getattr(tc, f"{stage}_epochs") * self.data.steps_per_epoch

    def _trainable(self, stage: str) -> list[torch.nn.Parameter]:
        return self.model.detail_parameters() if stage == "detail" else self.model.coarse_parameters()

    def _set_modes(self, stage: str) -> None:
        m = self.model
        for p in m.parameters():
            p.requires_grad_(False)
        m.train()
        if stage == "detail":
            for mod in m.encoder.coarse_modules():
                mod.eval()  # E_c (E_Tc) fixed, BN statistics included
        else:
            for mod in m.encoder.detail_modules():
                mod.eval()
            m.detail_decoder.eval()
        for p in self._trainable(stage):
            p.requires_grad_(True)

    def _new_optimizer(self, stage: str) -> torch.optim.Optimizer:
        if self.dist.enabled:  # DDP registers the parameters that require grad now: one wrapper per stage
            if self._ddp is not None:  # the old wrapper's gradient hooks go with it (else grads sync twice)
                self._ddp = None
                gc.collect()
            self._ddp = wrap_ddp(self._step_module, self.dist, self.device)
        return torch.optim.Adam(self._trainable(stage), lr=self.cfg.train.lr)

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.out_dir / "tb"), purge_step=self.global_step or None)
        return self._writer

    # ------------------------------------------------------------------ checkpoints
    def _payload(self) -> dict:
        optimizer = self.optimizer.state_dict() if self.optimizer else None
        return {"model": trainable_state(self.model), "optimizer": optimizer,
                "scheduler": None, "rng": rng_state(), "stage": self.stage, "stage_step": self.stage_step,
                "global_step": self.global_step, "done": self.done, "config": config_to_dict(self.cfg),
                "describe": self.model.describe()}

    def save(self) -> Path:
        """Write ``last.pt`` (rank 0 only under torchrun: every rank holds the same state)."""
        if self.dist.is_main:
            save_checkpoint(self.out_dir / LAST, self._payload())
        return self.out_dir / LAST

    def resume(self, path: Path | None = None) -> None:
        path = Path(path) if path is not None else self.out_dir / LAST
        ckpt = load_checkpoint(path)
        check_compatible(ckpt, self.model.describe(), path)
        load_trainable_state(self.model, ckpt["model"], path)
        self.stage, self.stage_step, self.global_step = ckpt["stage"], ckpt["stage_step"], ckpt["global_step"]
        self.done = list(ckpt.get("done", []))
        self.resumed_config = ckpt.get("config")
        if self.stage is not None:
            self._set_modes(self.stage)
            self.optimizer = self._new_optimizer(self.stage)
            if ckpt["optimizer"] is not None:
                self.optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        self._truncate_metrics()

    def _truncate_metrics(self) -> None:
        path = self.out_dir / "metrics.jsonl"
        if path.is_file() and self.dist.is_main:
            keep = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= self.global_step]
            atomic_write_text(path, "".join(k + "\n" for k in keep))

    def write_manifest(self, extra: dict | None = None) -> None:
        if not self.dist.is_main:
            return
        m = {"distributed": self.dist.to_dict(), "config": config_to_dict(self.cfg),
             "precision": self.precision.to_dict(), "device": str(self.device), "cpu": cpu_name(),
             "torch": torch.__version__,
             "python": platform.python_version(), "threads": torch.get_num_threads(),
             "assets": [{"file": n.filename, "role": n.role, "found": n.present,
                         **({} if n.present else {"without": n.without})} for n in self.needs],
             "losses": self.objective.manifest(), "model": self.model.describe(), "init": self.init_report,
             "data": {"root": str(self.data.root), "train_sequences": len(self.data),
                      "steps_per_epoch": self.data.steps_per_epoch,
                      "identities": sorted({s.parent.name for s, _ in self.data.ds.sequences})},
             "stages_done": self.done, "global_step": self.global_step, **(extra or {})}
        atomic_write_text(self.out_dir / "manifest.json", json.dumps(m, indent=1, default=str))

    # ------------------------------------------------------------------ steps
    def lr_factor(self, stage_step: int) -> float:
        """The learning rate of a stage's step ``stage_step`` (0-based) over its base (``train.lr``): a
        linear ramp ``(k + 1) / warmup`` over the stage's first ``train.warmup_steps`` steps, then 1. A
        function of the step alone, so a resumed run takes the same steps as one that never stopped."""
        w = self.cfg.train.warmup_steps
        return (stage_step + 1) / w if 0 < w and stage_step < w else 1.0

    def step(self, batch: Batch, stage: str) -> tuple[dict[str, float], object]:
        """One optimiser step; returns (terms as floats incl. ``total``, decoded). A non-finite loss raises
        :class:`_NonFinite` with the model exactly as before the step (BatchNorm statistics restored)."""
        saved = [(b, b.clone()) for b in self._buffers()]
        image, landmark, mask, flows = batch.image, batch.landmark, batch.mask, batch.flows
        if self.precision.dtype == torch.float64:
            image, landmark, mask = image.double(), landmark.double(), mask.double()
        if self.device.type == "cuda" and self.cfg.train.channels_last:
            image = image.flatten(0, 1).contiguous(memory_format=torch.channels_last).view_as(image)
        step = self._ddp if self._ddp is not None else self._step_module
        with self.precision.autocast():
            terms, dec = step(image, landmark, mask, flows, stage)
        total = sum(t.float() for t in terms.values())
        self.optimizer.zero_grad(set_to_none=True)
        if any_rank(not bool(torch.isfinite(total)), self.dist, self.device):  # every rank skips together
            bad = [k for k, v in terms.items() if not torch.isfinite(v)] or ["(another rank)"]
            with torch.no_grad():
                for b, v in saved:
                    b.copy_(v)
            raise _NonFinite(bad)
        total.backward()
        if self.cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self._trainable(stage), self.cfg.train.grad_clip)
        factor = self.lr_factor(self.stage_step)
        for group in self.optimizer.param_groups:
            group["lr"] = group.setdefault("base_lr", group["lr"]) * factor
        self.optimizer.step()
        names = ["total", *terms]
        values = mean_over_ranks(torch.stack([total.detach(), *(v.detach().float() for v in terms.values())]),
                                 self.dist).tolist()
        return dict(zip(names, values)), dec

    def _buffers(self) -> list[torch.Tensor]:
        return [b for m in (self.model.encoder, self.model.detail_decoder) for b in m.buffers()]

    def _log(self, stage: str, values: dict[str, float], rate: float) -> None:
        if not self.dist.is_main:
            return
        for k, v in values.items():
            self.writer.add_scalar(f"{stage}/{k}", v, self.global_step)
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"stage": stage, "step": self.global_step, "stage_step": self.stage_step,
                                "it_s": round(rate, 3), **{k: round(v, 6) for k, v in values.items()}}) + "\n")

    def _log_images(self, stage: str, batch: Batch, dec) -> None:
        if not self.dist.is_main:
            return
        from tvface.viz import training_grid

        self.writer.add_image(f"{stage}/grid", training_grid(batch, dec), self.global_step)

    def run(self, stages: list[str] | tuple[str, ...] = STAGES, stop_after: int | None = None) -> list[StageResult]:
        """Train ``stages`` in order from where the run stands (after :meth:`resume`, the saved step).

        ``stop_after``: stop after this many optimiser steps in this call (tests, interrupted runs).
        """
        for s in stages:
            if s not in STAGES:
                raise TrainingError(f"unknown stage {s!r}; stages are {STAGES} (or 'all')")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.write_manifest()
        done_names = [d["stage"] for d in self.done]
        results = []
        budget = stop_after
        for stage in stages:
            if stage in done_names:
                continue
            if self.stage != stage:
                self.stage, self.stage_step = stage, 0
                self._set_modes(stage)
                self.optimizer = self._new_optimizer(stage)
            res = self._train_stage(stage, budget)
            results.append(res)
            if budget is not None:
                budget -= res.steps
                if budget <= 0 and self.stage_step < self.stage_steps(stage):
                    break
        if self._writer is not None:
            self._writer.flush()
        return results

    def _train_stage(self, stage: str, budget: int | None) -> StageResult:
        from tqdm.auto import tqdm

        total_steps = self.stage_steps(stage)
        tc = self.cfg.train
        bad_in_row, skipped, steps_here = 0, 0, 0
        first = last = float("nan")
        t0 = time.perf_counter()
        bar = tqdm(total=total_steps, initial=self.stage_step, desc=stage, unit="it", disable=not self.progress,
                   dynamic_ncols=True)
        while self.stage_step < total_steps and (budget is None or steps_here < budget):
            batch = self.data.batch(self.global_step, self.device, self.dist)
            t_step = time.perf_counter()
            try:
                values, dec = self.step(batch, stage)
                bad_in_row = 0
            except _NonFinite as exc:
                bad_in_row += 1
                skipped += 1
                log.warning("step %d (%s): non-finite loss in %s; step skipped", self.global_step, stage, exc.terms)
                if self.dist.is_main:
                    with open(self.out_dir / "metrics.jsonl", "a") as f:
                        f.write(json.dumps({"stage": stage, "step": self.global_step, "skipped": exc.terms}) + "\n")
                if bad_in_row >= self.cfg.loss.max_bad_steps:
                    self.save()
                    raise TrainingError(
                        f"{bad_in_row} steps in a row with a non-finite loss ({exc.terms}) at step {self.global_step} "
                        f"of stage {stage}; stopped. Last good weights: {self.out_dir / LAST}. Lower train.lr, "
                        "set train.grad_clip, or check the data (landmarks/masks) of this run.") from None
                values, dec = None, None
            self.global_step += 1
            self.stage_step += 1
            steps_here += 1
            if values is not None:
                first = values["total"] if math.isnan(first) else first
                last = values["total"]
                rate = 1.0 / max(time.perf_counter() - t_step, 1e-9)
                bar.set_postfix(loss=f"{last:.4f}", refresh=False)
                if self.global_step % tc.log_every == 0 or self.stage_step == total_steps or steps_here == 1:
                    self._log(stage, values, rate)
                if tc.image_every and (self.global_step % tc.image_every == 0):
                    self._log_images(stage, batch, dec)
            bar.update(1)
            if self.global_step % tc.checkpoint_every == 0:
                self.save()
        bar.close()
        seconds = time.perf_counter() - t0
        if self.stage_step >= total_steps:
            self.done.append({"stage": stage, "steps": total_steps, "global_step": self.global_step,
                              "seconds_last_session": round(seconds, 2), "skipped": skipped})
        self.save()
        self.write_manifest()
        return StageResult(stage, steps_here, seconds, first, last, skipped)


class _NonFinite(Exception):
    def __init__(self, terms: list[str]) -> None:
        super().__init__(", ".join(terms))
        self.terms = terms


# What a run's result depends on: a run continued by open_run must have been made with the same values.
RUN_SECTIONS = ("face_model", "model", "temporal", "loss")
RUN_TRAIN_KEYS = ("batch_size", "lr", "seed", "warmup_steps", "grad_clip")
# Settings of the run's sections that only inference reads: a trained run serves any of them.
INFERENCE_KEYS = (("temporal", "window_stride"),)
# Keys added with a change of behaviour: the value a run saved before the key existed had.
def run_config_differences(stored: dict | None, cfg: ProfileConfig) -> list[str]:
    """``section.key: run X, now Y`` for every setting a run's result depends on (:data:`RUN_SECTIONS`,
    :data:`RUN_TRAIN_KEYS`; not the step counts, so a longer schedule continues, nor the inference-only
    :data:`INFERENCE_KEYS`, so one run is evaluated at several window strides) that differs between
    the run's stored config and ``cfg`` (``temporal`` only for a temporal encoder: a per-frame run does
    not depend on it). Keys the stored config lacks count as their
    :data:`tvface.config.LEGACY_VALUES` (else as equal)."""
    if not isinstance(stored, dict):
        return []
    now = json.loads(json.dumps(config_to_dict(cfg)))  # tuples -> lists, as stored
    stored = with_legacy_values(json.loads(json.dumps(stored, default=str)))
    sections = [sec for sec in RUN_SECTIONS if sec != "temporal" or cfg.model.encoder == "temporal"]
    keys = [(sec, k) for sec in sections for k in now.get(sec, {}) if (sec, k) not in INFERENCE_KEYS]
    keys += [("train", k) for k in RUN_TRAIN_KEYS]
    diffs = []
    for sec, k in keys:
        v = now.get(sec, {}).get(k)
        old = stored.get(sec, {}).get(k, v)
        if old != v:
            diffs.append(f"{sec}.{k}: run {old!r}, now {v!r}")
    return diffs


def open_run(cfg: ProfileConfig, out_dir: Path, progress: bool = False, **kwargs) -> Trainer:
    """A :class:`Trainer` on ``out_dir`` that continues the run there, if there is one (what the book and
    the study do when executed again).

    A run made for another model or config (a checkpoint :func:`check_compatible` refuses, e.g. after
    the profile's encoder size changed, or one whose stored config differs in a setting its result
    depends on, :func:`run_config_differences`, e.g. a changed loss weight or initialisation) is not
    deleted: it is renamed to ``<out_dir>.stale-<n>``, one line says so, and a new run starts in
    ``out_dir``.
    """
    out_dir = Path(out_dir)
    trainer = Trainer(cfg, out_dir, progress=progress, **kwargs)
    if (out_dir / LAST).exists():
        reason = None
        try:
            trainer.resume()
            diffs = run_config_differences(trainer.resumed_config, cfg)
            if diffs:
                reason = "; ".join(diffs)
        except CheckpointError as exc:
            reason = str(exc).split(" config: ", 1)[-1].split(". Use ", 1)[0]
        if reason is not None:
            n = 1
            while out_dir.with_name(f"{out_dir.name}.stale-{n}").exists():
                n += 1
            aside = out_dir.with_name(f"{out_dir.name}.stale-{n}")
            os.replace(out_dir, aside)
            print(f"{out_dir}: the run there was made for another model or config ({reason}); moved to {aside}, "
                  "starting a new run")
            trainer = Trainer(cfg, out_dir, progress=progress, quiet=True, **kwargs)  # warned once above
    return trainer


def train(cfg: ProfileConfig, out_dir: Path, stage: str = "all", resume: bool = False,
          progress: bool = True, assets_root: Path | None = None) -> Trainer:
    """What ``tvface train`` does: build, optionally resume, run the stage(s), return the trainer.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process joins the group and trains its share of the
    global batch (:mod:`tvface.training.distributed`).
    """
    stages = list(STAGES) if stage == "all" else [stage]
    out_dir = Path(out_dir)
    if not resume and (out_dir / LAST).exists():
        raise TrainingError(f"{out_dir} already holds a run ({LAST}); pass --resume to continue it or choose "
                            "another --out")
    if resume and not (out_dir / LAST).exists():
        raise TrainingError(f"--resume: no checkpoint {out_dir / LAST}; start without --resume")
    ctx = init_from_env(cfg.train.device)
    try:
        trainer = Trainer(cfg, out_dir, assets_root=assets_root, progress=progress, dist=ctx)
        if resume:
            trainer.resume()
        trainer.run(stages)
    finally:
        shutdown(ctx)
    return trainer
