"""Studies over many runs: the sweep's and tuner's shared machinery (``study``), the analyses and
their plots, robustness to noisy modalities, statistics and the baselines."""
