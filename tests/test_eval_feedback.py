"""The feedback simulation's figure is drawn without touching global matplotlib state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inquire.eval.feedback import FeedbackSimulation


def test_plot_uses_a_figure_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib
    import matplotlib.pyplot as plt

    def no_switch(*args: object, **kwargs: object) -> None:
        raise AssertionError("library code switched the matplotlib backend")

    monkeypatch.setattr(matplotlib, "use", no_switch)
    before = plt.get_fignums()
    sim = FeedbackSimulation(
        queries=pd.DataFrame({"query_id": [1, 2], "supercategory": ["a", "b"]}),
        static=np.array([[0, 1, 1, 2], [1, 1, 2, 2]]),
        feedback=np.array([[0, 1, 2, 3], [1, 2, 2, 3]]),
        n_rel=np.array([3, 4]),
        static_ids=np.arange(8).reshape(2, 4),
        feedback_ids=np.arange(8).reshape(2, 4),
    )
    fig = sim.plot(tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert plt.get_fignums() == before and len(fig.axes) == 1
