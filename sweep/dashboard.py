"""`sweep dashboard`: the real optuna-dashboard on a study storage, bound to localhost by default."""

from __future__ import annotations

import logging
import socket
import sys
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


def exposed(host: str) -> bool:
    """Whether binding `host` lets other machines connect: anything but a loopback address."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it names a network interface
        return True


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


def only_present_artifacts(storage, artifact_dir: str):
    """`storage` as the dashboard reads it: artifact entries whose file is not in `artifact_dir`
    (a file deleted by hand, or one removed by a version of sweep that left its entry behind) are
    left out, so that every link the dashboard shows downloads."""
    import copy
    import json
    import os

    def present(key: str, value) -> bool:
        if not key.startswith(("artifacts:", "dashboard:artifacts:")) or not isinstance(value, str):
            return True
        try:
            meta = json.loads(value)
        except ValueError:
            return True
        aid = meta.get("artifact_id") if isinstance(meta, dict) else None
        return meta is None or (isinstance(aid, str) and os.path.isfile(os.path.join(artifact_dir, aid)))

    def kept(attrs: dict) -> dict:
        return {k: v for k, v in attrs.items() if present(k, v)}

    get_all_trials, get_all_studies = storage.get_all_trials, storage.get_all_studies
    get_study_system_attrs, get_trial_system_attrs = storage.get_study_system_attrs, storage.get_trial_system_attrs

    def trials(*args, **kwargs):
        out = []
        for t in get_all_trials(*args, **kwargs):
            attrs = t._system_attrs
            if any(not present(k, v) for k, v in attrs.items()):
                t = copy.copy(t)
                t._system_attrs = kept(attrs)
            out.append(t)
        return out

    def studies():
        out = []
        for s in get_all_studies():
            if any(not present(k, v) for k, v in s.system_attrs.items()):
                s = copy.copy(s)
                s.system_attrs = kept(s.system_attrs)
            out.append(s)
        return out

    storage.get_all_trials, storage.get_all_studies = trials, studies
    storage.get_study_system_attrs = lambda study_id: kept(get_study_system_attrs(study_id))
    storage.get_trial_system_attrs = lambda trial_id: kept(get_trial_system_attrs(trial_id))
    return storage


def serve(storage_url: str, host: str, port: int, artifact_dir: str | None, announce) -> None:
    storage = open_storage(storage_url, create=False)
    check_port(host, port)
    if exposed(host):
        announce(f"sweep dashboard: --host {host} serves every study in this storage, and the kept weights to "
                 f"download, to anyone who can reach port {port} of this machine: no password, no encryption")
    artifact_store = None
    if artifact_dir is not None and not Path(artifact_dir).is_dir():
        raise SweepError(f"--artifact-dir {artifact_dir}: no such directory")
    artifact_dir = artifact_dir or recorded_artifact_dir(storage)
    if artifact_dir is not None:
        from optuna.artifacts import FileSystemArtifactStore

        artifact_store = FileSystemArtifactStore(artifact_dir)
        announce(f"kept weights from {artifact_dir}")
    from optuna_dashboard import wsgi

    served = served_storage(storage)
    if artifact_dir is not None:
        served = only_present_artifacts(served, artifact_dir)
    app = wsgi(served, artifact_store=artifact_store)
    server = quiet_server(host, port, app, announce)
    shown = f"[{host}]" if ":" in host else host
    announce(f"optuna-dashboard on http://{shown}:{port}/ (Ctrl-C to stop)")
    try:
        server.serve_forever()
    finally:
        server.server_close()


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    # a traceback's last line is the error itself; a logged message's first line is its summary
    return (lines[-1] if lines and lines[0].startswith("Traceback") else lines[0] if lines else "")[:300]


class _OneLine:
    """A request's error stream (wsgi.errors): whatever is written there (bottle's tracebacks) is
    said as one line once the writer flushes."""

    def __init__(self, where: str, say):
        self.where, self.say, self.parts = where, say, []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        text, self.parts = "".join(self.parts), []
        finding = first_line(text)
        if finding and finding not in ("KeyboardInterrupt", "SystemExit"):  # Ctrl-C mid-request: no error
            self.say(f"sweep dashboard: {self.where}: {finding}")


def quiet_server(host: str, port: int, app, announce):
    """The dashboard's WSGI app on wsgiref's server (what optuna-dashboard's run_server uses), without
    its access line per request: an error is one line on the console, never a traceback."""
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    say = announce

    class Handler(WSGIRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - the access line per request
            pass

        def get_stderr(self):
            return _OneLine(f"{self.command} {self.path.split('?')[0]}", say)

    class Server(WSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        def handle_error(self, request, client_address):  # a dropped connection, say
            error = sys.exc_info()[1]
            say(f"sweep dashboard: a request from {client_address[0]} failed: "
                f"{type(error).__name__}: {first_line(str(error))}")

    log = logging.getLogger("optuna_dashboard")  # its API views log a traceback per error
    log.handlers = []
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("sweep dashboard: %(message)s"))
    handler.addFilter(_first_line_only)
    log.addHandler(handler)
    log.propagate = False

    def app_with_errors(environ, start_response):
        environ["wsgi.errors"] = _OneLine(f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}", say)
        return app(environ, start_response)

    return make_server(host, port, app_with_errors, server_class=Server, handler_class=Handler)


def _first_line_only(record: logging.LogRecord) -> bool:
    record.msg, record.args, record.exc_info, record.exc_text = first_line(record.getMessage()), (), None, None
    return True
