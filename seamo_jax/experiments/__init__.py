"""Experiment configs shipped with the package, addressable by name (`--config demo_cpu:fast`).

Each module defines `get_config(arg) -> ml_collections.ConfigDict` starting
from `base.get_config()` (every default lives in base.py) and lists the
arguments it accepts in `VARIANTS` ("" = the default).
"""
