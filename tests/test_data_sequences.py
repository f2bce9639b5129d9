"""The one-character rule on hand-made detections (no models)."""
import numpy as np

from tests._data_fixtures import data_cfg
from tvface.data.collect.detect import Detection
from tvface.data.collect.sequences import classify_frame, select_sequences
from tvface.data.collect.shots import runs_of_consecutive, split_shots


def face(x=100.0, y=100.0, side=80.0, score=0.999):
    return Detection((x, y, x + side, y + side), score)


def statuses(n, cfg, special=None):
    special = special or {}
    out = []
    for i in range(n):
        dets = special.get(i, [face(100 + i)])
        out.append(classify_frame(i, dets, cfg))
    return out


def test_classify_frame_reasons():
    cfg = data_cfg()
    assert classify_frame(0, [face()], cfg).ok
    assert classify_frame(0, [], cfg).reason == "no_face"
    assert classify_frame(0, [face(score=0.5)], cfg).reason == "no_face"
    assert classify_frame(0, [face(), face(300)], cfg).reason == "several_faces"
    assert classify_frame(0, [face(), face(300)], cfg, one_person=True).ok
    assert classify_frame(0, [face(side=20)], cfg).reason == "face_too_small"
    assert classify_frame(0, [face(), face(300, side=25)], cfg).ok  # a background face is no character
    assert classify_frame(0, [], cfg, error="zero-byte file").reason == "unreadable_frame"
    assert classify_frame(0, [], cfg, blank=True).reason == "blank_frame"


def test_runs_need_min_length_and_respect_shots_and_gaps():
    cfg = data_cfg(min_sequence_length=10, max_gap=2)
    # 30 frames, cut after 14; two-face frames 3-4 (a gap of 2: tolerated), 20-22 (gap 3: breaks).
    two = [face(), face(300)]
    st = statuses(30, cfg, {3: two, 4: two, 20: two, 21: two, 22: two})
    sel = select_sequences(st, [(0, 14), (15, 29)], cfg)
    assert [[s.index for s in seq] for seq in sel.sequences] == [[0, 1, 2] + list(range(5, 15))]
    reasons = {(r["frames"][0], r["frames"][1]): r["reason"] for r in sel.rejections}
    assert reasons[(3, 4)] == "several_faces"
    assert reasons[(15, 19)] == "too_short" and reasons[(23, 29)] == "too_short"
    assert reasons[(20, 22)] == "several_faces"


def test_jump_and_identity_change_split_runs():
    cfg = data_cfg(min_sequence_length=5)
    st = statuses(12, cfg, {k: [face(400 + k)] for k in range(6, 12)})
    sel = select_sequences(st, [(0, 11)], cfg)
    assert [len(s) for s in sel.sequences] == [6, 6]  # the jump at frame 6 starts a new run
    desc = {i: np.zeros(128) if i < 6 else np.full(128, 0.1) for i in range(12)}  # distance 1.13 > 0.6
    st = statuses(12, cfg)
    assert [len(s) for s in select_sequences(st, [(0, 11)], cfg, desc).sequences] == [6, 6]
    assert len(select_sequences(st, [(0, 11)], cfg).sequences) == 1


def test_shot_splitting_known_answers():
    assert split_shots([0, 1, 2, 3, 4], [0, 0.1, 0.9, 0.1, 0.2], 0.5) == [(0, 1), (2, 4)]
    d = [0, 0.05, 0.06, 0.4, 0.05, 0.04, 0.3, 0.25, 0.35]  # 0.4 stands out; 0.3 among 0.25-0.35 does not
    assert split_shots(list(range(9)), d, 0.5, adaptive_ratio=3.0, minimum=0.25) == [(0, 2), (3, 8)]
    assert runs_of_consecutive([7, 3, 4, 5, 9, 8]) == [(3, 5), (7, 9)]
