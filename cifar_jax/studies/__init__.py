"""Studies over many runs, as libraries: the sweep runner (``sweep``), the reproduction of
the seed reports (``reproduction``), and the optimization analyses (``analysis``: loss
landscapes, the BatchNorm study). The commands of the same names only parse flags and call
these; the configs under ``configs/sweeps/`` build their sweeps with ``sweep.sweep_config``."""
