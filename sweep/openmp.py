"""How a worker's torch threads wait for each other: OpenMP's wait policy, set where it takes effect.

torch's CPU kernels run on OpenMP threads (GNU libgomp in torch's Linux wheels). Between parallel
regions libgomp's threads spin by default (300,000 turns) before they sleep. On a machine to
itself that saves a wake-up; beside other work a spinning thread holds a core that the thread it
waits for needs, and the training crawls. `python -m benchmarks.threads` (docs/benchmarks.md,
"Thread policy"), a quick-study training on 2 cores beside 2 busy processes: PASSIVE took 0.12x
the default's wall time, 1 thread and a 1,000-turn spin 0.18x; a quick sweep 0.19x. On an idle
machine PASSIVE costs 1.12x (a wake-up per parallel region), the price of the 5-8x beside others.

OpenMP reads the policy once, when the runtime loads (with torch), and workers fork from a fork
server that imported torch before any of them started (sweep/pool.py PRELOAD): so the fork server
sets it before it imports torch (`sweep.openmp_preload`, first in PRELOAD), and each worker's
environment carries it too, for whatever it starts. A user's own setting of any of USER_KEYS wins.
"""

from __future__ import annotations

from collections.abc import Mapping

# The workers' policy, chosen by benchmarks/threads.py's figures (docs/benchmarks.md).
WORKER_OPENMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
# A user who sets any of these has chosen how OpenMP waits (GOMP_SPINCOUNT is libgomp's spin
# count, KMP_BLOCKTIME Intel's and LLVM's): theirs is left as it is, ours is not added.
USER_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def worker_openmp_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What a worker's environment gets on top of `environ`: the workers' policy, or nothing where
    `environ` already says how OpenMP waits."""
    if any(key in environ for key in USER_KEYS):
        return {}
    return dict(WORKER_OPENMP_ENV)
