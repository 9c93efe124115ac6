"""A builder's step that cannot count its progress (a scikit-learn fit) shows its elapsed time, live."""

import time

from ada2i_fast.data import progress


def test_a_stage_refreshes_its_clock_until_it_ends(monkeypatch, capsys):
    monkeypatch.setattr(progress, "REFRESH_SECONDS", 0.02)
    with progress.stage("fitting TruncatedSVD"):
        time.sleep(0.3)
    shown = capsys.readouterr().err
    assert shown.count("fitting TruncatedSVD: 00:00") >= 4  # drawn at the start, refreshed, drawn at the end
