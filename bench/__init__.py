"""Benchmarks of tinygpt, run from the repository root as `python -m bench NAME [options]`
(`python -m bench.NAME` is the same: each module hands itself to the dispatcher, which
tunes malloc as tinygpt's trainer does before any benchmark runs). They sit beside the
package, not in it: nothing in tinygpt imports them, and `pip install` leaves them out.
"""

import os
from pathlib import Path

# The folder that holds bench/ (and, in a source checkout, tinygpt/).
ROOT = Path(__file__).resolve().parents[1]


def with_root_on_path(env, *roots):
    """`env` (a dict of environment variables) with `roots` (default: ROOT) first on
    PYTHONPATH, in order and each once, so that a subprocess finds this bench (and the
    tinygpt of a given checkout) from any working directory."""
    env = dict(env)
    first = [str(r) for r in (roots or (ROOT,))]
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in first]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(first + rest))
    return env


def run_as_main(name):
    """`python -m bench.NAME ARGS`: run as `python -m bench NAME ARGS` (the dispatcher's
    set-up, then NAME's main) and exit with its status."""
    import sys
    from .__main__ import main
    sys.exit(main([name, *sys.argv[1:]]))
