"""`sweep dashboard`: the real optuna-dashboard on a study storage, bound to localhost by default."""

from __future__ import annotations

import socket

from .errors import SweepError
from .storage import open_storage


def check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            reason = "in use" if e.errno in (98, 48) else (e.strerror or str(e))
            raise SweepError(f"cannot serve on {host}:{port}: {reason} (pick another --port)") from None


def serve(storage_url: str, host: str, port: int, artifact_dir: str | None, announce) -> None:
    storage = open_storage(storage_url, create=False)
    check_port(host, port)
    artifact_store = None
    if artifact_dir is not None:
        from pathlib import Path

        from optuna.artifacts import FileSystemArtifactStore

        if not Path(artifact_dir).is_dir():
            raise SweepError(f"--artifact-dir {artifact_dir}: no such directory")
        artifact_store = FileSystemArtifactStore(artifact_dir)
    from optuna_dashboard import run_server

    shown = f"[{host}]" if ":" in host else host
    announce(f"optuna-dashboard on http://{shown}:{port}/ (Ctrl-C to stop)")
    run_server(storage, host=host, port=port, artifact_store=artifact_store)
