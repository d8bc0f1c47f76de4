"""Imported by the workers' fork server before torch (sweep/pool.py PRELOAD): puts the workers'
OpenMP wait policy (sweep/openmp.py) into its environment while OpenMP can still read it, when
torch loads it. Workers fork from that server and inherit the runtime as it was set up."""

import os

from .openmp import worker_openmp_env

os.environ.update(worker_openmp_env(os.environ))
