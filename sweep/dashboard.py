"""`sweep dashboard`: the real optuna-dashboard on a study storage, bound to localhost by default."""

from __future__ import annotations

import socket
from pathlib import Path


from .errors import SweepError
from .storage import open_storage


def check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        # as servers bind: the closed connections of a server that just stopped (TIME_WAIT) do not
        # hold the port, a server listening on it does
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            reason = "in use" if e.errno in (98, 48) else (e.strerror or str(e))
            raise SweepError(f"cannot serve on {host}:{port}: {reason} (pick another --port)") from None


def recorded_artifact_dir(storage) -> str | None:
    """The folder where `sweep run` kept the weights of this storage's studies, if it still exists."""
    for study in storage.get_all_studies():  # without their trials
        path = study.user_attrs.get("artifact_dir")
        if isinstance(path, str) and Path(path).is_dir():
            return path
    return None


def served_storage(storage):
    """What the dashboard reads: the storage behind Optuna's trial cache, so that each of its polls
    (every 2-10 s per open page) reads only the trials that changed, not the whole study again
    (seconds at 5,000 trials)."""
    from optuna.storages import RDBStorage
    from optuna.storages._cached_storage import _CachedStorage

    return _CachedStorage(storage) if isinstance(storage, RDBStorage) else storage  # a proxy's client caches itself


def serve(storage_url: str, host: str, port: int, artifact_dir: str | None, announce) -> None:
    storage = open_storage(storage_url, create=False)
    check_port(host, port)
    artifact_store = None
    if artifact_dir is not None and not Path(artifact_dir).is_dir():
        raise SweepError(f"--artifact-dir {artifact_dir}: no such directory")
    artifact_dir = artifact_dir or recorded_artifact_dir(storage)
    if artifact_dir is not None:
        from optuna.artifacts import FileSystemArtifactStore

        artifact_store = FileSystemArtifactStore(artifact_dir)
        announce(f"kept weights from {artifact_dir}")
    from optuna_dashboard import run_server

    shown = f"[{host}]" if ":" in host else host
    announce(f"optuna-dashboard on http://{shown}:{port}/ (Ctrl-C to stop)")
    run_server(served_storage(storage), host=host, port=port, artifact_store=artifact_store)
