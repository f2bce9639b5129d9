import numpy as np
import pytest

from tests._data_fixtures import data_cfg, shared_media
from tvface.data.evaluate import evaluate_landmarks, nme, read_pts


def test_nme_known_answer(tmp_path):
    gt = np.zeros((68, 2))
    gt[36], gt[45] = (0, 0), (50, 0)  # inter-ocular 50 px
    assert nme(gt + [0.0, 1.0], gt) == pytest.approx(2.0)
    pts = tmp_path / "a.pts"
    pts.write_text("version: 1\nn_points: 68\n{\n" + "\n".join(f"{k + 1} {k + 2}" for k in range(68)) + "\n}\n")
    np.testing.assert_allclose(read_pts(pts)[0], [0, 1])  # 1-based -> 0-based


@pytest.mark.slow
def test_offline_landmarks_nme_on_shared_media():
    media = shared_media()
    if media is None:
        pytest.skip("shared media not available ($TVFACE_SHARED)")
    res = evaluate_landmarks(media, data_cfg())
    assert res["image_0010"]["nme"] < 5.0
    seq = res["tv_sample_id1"]["nme"]
    assert None not in seq and np.mean(seq) < 5.0 and max(seq) < 6.0
