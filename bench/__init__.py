"""Benchmarks of tinygpt, run from the repository root as `python -m bench NAME [options]`
(or `python -m bench.NAME`). They sit beside the package, not in it: nothing in tinygpt
imports them, and `pip install` leaves them out.
"""

import os
from pathlib import Path

# The folder that holds bench/ (and, in a source checkout, tinygpt/).
ROOT = Path(__file__).resolve().parents[1]


def with_root_on_path(env):
    """`env` (a dict of environment variables) with ROOT first on PYTHONPATH, so that a
    `python -m bench ...` subprocess finds this bench from any working directory."""
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env
