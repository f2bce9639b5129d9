"""Step 7b: the root manifest and the QC report (counts, rejections with reasons, contact sheet).

Both are rebuilt from what is on disk, so a report after a resumed run equals one after a clean run.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from tvface.config import DataConfig
from tvface.data import layout
from tvface.data.collect.sequences import REASONS
from tvface.data.collect.sources import Source
from tvface.io.atomic import atomic_write_bytes, atomic_write_text

TILE = 160
SHEET_COLUMNS = 6
MAX_TILES = 48


def build_manifest(root: Path) -> dict:
    """Index of every complete sequence under ``root``."""
    seqs = []
    for seq_dir in layout.list_sequences(root):
        m = layout.read_manifest(seq_dir)
        recs = [f.get("landmarks") or {} for f in m["frames"]]
        seqs.append({"identity": m["identity"], "sequence": m["sequence"], "path": str(seq_dir.relative_to(root)),
                     "n_frames": m["n_frames"], "source": m["source"]["path"], "backends": m["backends"],
                     "source_frames": [m["frames"][0]["source_frame"], m["frames"][-1]["source_frame"]],
                     "landmarks_flagged": sum(bool(r.get("flagged")) for r in recs),
                     "landmarks_by_backend": dict(Counter(f.get("landmarks_backend", "?") for f in m["frames"]))})
    return {"n_sequences": len(seqs), "n_frames": sum(s["n_frames"] for s in seqs),
            "landmarks_flagged": sum(s["landmarks_flagged"] for s in seqs),
            "identities": sorted({s["identity"] for s in seqs}), "sequences": seqs}


def _tile(seq_dir: Path) -> np.ndarray:
    """Middle frame of a sequence with its landmarks and mask outline, labelled."""
    stems = layout.frame_stems(seq_dir)
    stem = stems[len(stems) // 2]
    img = cv2.imread(str(layout.image_path(seq_dir, stem)))
    kpt = np.load(layout.kpt_path(seq_dir, stem))
    mask = (np.load(layout.mask_path(seq_dir, stem)) > 0.5).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(img, contours, -1, (255, 200, 0), 1)
    for x, y in kpt:
        cv2.circle(img, (round(float(x)), round(float(y))), 1, (0, 255, 0), -1)
    img = cv2.resize(img, (TILE, TILE), interpolation=cv2.INTER_AREA)
    label = f"{seq_dir.parent.name[:14]} n={len(stems)}"
    cv2.rectangle(img, (0, TILE - 14), (TILE, TILE), (0, 0, 0), -1)
    cv2.putText(img, label, (2, TILE - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def contact_sheet(root: Path, path: Path) -> Path | None:
    """A grid of one tile per sequence (at most MAX_TILES) written to ``path`` (JPEG)."""
    seqs = layout.list_sequences(root)[:MAX_TILES]
    if not seqs:
        return None
    tiles = [_tile(s) for s in seqs]
    rows = -(-len(tiles) // SHEET_COLUMNS)
    sheet = np.full((rows * TILE, min(len(tiles), SHEET_COLUMNS) * TILE, 3), 32, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, SHEET_COLUMNS)
        sheet[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] = t
    _, buf = cv2.imencode(".jpg", sheet, [cv2.IMWRITE_JPEG_QUALITY, 90])
    atomic_write_bytes(path, buf.tobytes())
    return path


def write_report(root: Path, work: Path, sources: list[Source], cfg: DataConfig,
                 timings: dict[str, float] | None = None) -> dict:
    """Write ``<root>/manifest.json`` and ``<root>/qc/{report.json, report.md, contact_sheet.jpg}``."""
    root, work = Path(root), Path(work)
    manifest = build_manifest(root)
    atomic_write_text(root / layout.ROOT_MANIFEST, json.dumps(manifest, indent=1))
    per_source = []
    for s in sources:
        sel_path = work / s.name / "sequences.json"
        sel = json.loads(sel_path.read_text()) if sel_path.is_file() else {"sequences": [], "rejections": [],
                                                                          "warnings": ["not processed"]}
        kept = sum(len(q["frames"]) for q in sel["sequences"])
        by_reason = Counter()
        for r in sel["rejections"]:
            by_reason[r["reason"]] += max(r["n"], 1) if r["frames"] is not None else 1
        flagged = sum(q["landmarks_flagged"] for q in manifest["sequences"]
                      if q["sequence"] in {x["name"] for x in sel["sequences"]})
        per_source.append({
            "source": str(s.path), "name": s.name, "landmarks_flagged": flagged, "kind": s.kind,
            "n_frames": sel.get("n_frames", 0),
            "n_shots": sel.get("n_shots", 0), "frames_kept": kept, "n_sequences": len(sel["sequences"]),
            "sequences": [{"name": q["name"], "identity": q["identity"], "n_frames": len(q["frames"]),
                           "source_frames": [q["frames"][0]["index"], q["frames"][-1]["index"]]}
                          for q in sel["sequences"]],
            "rejected_frames_by_reason": dict(sorted(by_reason.items())),
            "rejections": sel["rejections"], "warnings": sel.get("warnings", [])})
    report = {"root": str(root), "config": asdict(cfg), "reasons": REASONS, "sources": per_source,
              "totals": {"sources": len(per_source), "sequences": manifest["n_sequences"],
                         "frames": manifest["n_frames"], "identities": len(manifest["identities"]),
                         "landmarks_flagged": manifest["landmarks_flagged"]}}
    qc = root / "qc"
    sheet = contact_sheet(root, qc / "contact_sheet.jpg")
    report["contact_sheet"] = str(sheet) if sheet else None
    atomic_write_text(qc / "report.json", json.dumps(report, indent=1))
    atomic_write_text(qc / "report.md", format_report(report))
    if timings is not None:
        atomic_write_text(qc / "timings.json", json.dumps(timings, indent=1))
    return report


def format_report(report: dict) -> str:
    """Markdown summary: one table row per source, then every rejection with its reason."""
    lines = ["# Collection QC report", "",
             (f"{report['totals']['sequences']} sequences, {report['totals']['frames']} frames, "
              f"{report['totals']['identities']} identities; "
              f"{report['totals'].get('landmarks_flagged', 0)} kept frames with flagged landmarks "
              "(kept, landmark terms off in training)."), "",
             "| source | kind | frames | shots | kept | flagged landmarks | sequences | rejected frames by reason |",
             "|---|---|---|---|---|---|---|---|"]
    for s in report["sources"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in s["rejected_frames_by_reason"].items()) or "-"
        lines.append(f"| {s['name']} | {s['kind']} | {s['n_frames']} | {s['n_shots']} | {s['frames_kept']} | "
                     f"{s.get('landmarks_flagged', 0)} | {s['n_sequences']} | {reasons} |")
    lines += ["", "## Rejections", ""]
    for s in report["sources"]:
        for w in s["warnings"]:
            lines.append(f"- **{s['name']}** warning: {w}")
        for r in s["rejections"]:
            where = "whole input" if r["frames"] is None else (
                f"frame {r['frames'][0]}" if r["n"] == 1 else f"frames {r['frames'][0]}-{r['frames'][1]} ({r['n']})")
            lines.append(f"- **{s['name']}** {where}: {r['reason']} — {r['detail']}")
    return "\n".join(lines) + "\n"
