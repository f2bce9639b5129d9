import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from tvface.config import TemporalConfig  # noqa: E402
from tvface.models.diagram import draw_layout, draw_propagation_grid  # noqa: E402
from tvface.models.temporal import TemporalEncoders  # noqa: E402


@pytest.mark.parametrize("n_frames", [1, 2, 5])
def test_grid_has_one_edge_per_alignment(n_frames):
    cfg = TemporalConfig(channels=16, offset_channels=16, deform_groups=4, fc_dim=32)
    enc = TemporalEncoders(cfg, 10, detail_size=4)
    fig, ax = plt.subplots()
    draw_propagation_grid(enc, n_frames, ax)
    styles = [a.arrow_patch.get_linestyle() for a in ax.texts if getattr(a, "arrow_patch", None)]
    n_branches = 2 * cfg.n_levels
    assert styles.count("-") == n_branches * max(n_frames - 1, 0)  # first order: i-1 (i+1) -> i
    assert styles.count("--") == n_branches * max(n_frames - 2, 0)  # second order: i-2 (i+2) -> i
    plt.close(fig)
    fig, ax = plt.subplots()
    draw_layout(enc, ax)
    labels = [t.get_text() for t in ax.texts if t.get_text()]
    assert [s.split(":")[0] for s in labels][2:2 + n_branches] == ["backward_1", "forward_1", "backward_2", "forward_2"]
    plt.close(fig)
