"""The collection on the shared TV media (slow; skipped without $TVFACE_SHARED or /work/shared)."""
import pytest

from tests._data_fixtures import data_cfg, shared_media
from tvface.data.collect.pipeline import collect

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def media():
    m = shared_media()
    if m is None or not (m / "tv-patches").is_dir():
        pytest.skip("shared media not available ($TVFACE_SHARED)")
    return m


def test_tv_patches_sequences_and_coverage(media, tmp_path):
    report = collect([media / "tv-patches"], data_cfg(num_threads=2, descriptor="dlib"), tmp_path / "ds",
                     tmp_path / "work")
    by = {s["name"]: s for s in report["sources"]}
    # Runs of >= 10 consecutive patch numbers (tv-patches/README.md): 3, 3, 3, 1, 2 and none in id_10.
    expected = {"id_2": 3, "id_3": 3, "id_6": 3, "id_7": 1, "id_8": 2, "id_10": 0}
    assert {k: by[k]["n_sequences"] for k in expected} == expected
    # id_6's third run (from patch 8517) shows another person: relabelled and reported.
    assert [q["identity"] for q in by["id_6"]["sequences"]] == ["id_6", "id_6", "id_6_person1"]
    in_runs = 30 + 30 + 30 + 10 + 40
    assert sum(s["frames_kept"] for s in by.values()) >= 0.98 * in_runs


def test_real_clips_outcome(media, tmp_path):
    report = collect([media / "videos"], data_cfg(num_threads=2, descriptor="dlib"), tmp_path / "ds", tmp_path / "work")
    by = {s["name"]: s for s in report["sources"]}
    assert by["multi_face"]["n_sequences"] == 0 and by["video"]["n_sequences"] == 0
    assert set(by["multi_face"]["rejected_frames_by_reason"]) == {"several_faces"}
    ham = [tuple(q["source_frames"]) for q in by["short_hamilton_clip"]["sequences"]]
    # One sequence inside the one-face shot 82-210 (videos/README.md). Known difference: the shot
    # 20-81 opens with a 16-frame close-up profile of the same singer that the rule also keeps.
    inside = [(a, b) for a, b in ham if 82 <= a and b <= 210]
    assert len(inside) == 1 and inside[0][1] - inside[0][0] >= 100
