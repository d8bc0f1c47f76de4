"""`sweep proxy`: Optuna's gRPC storage proxy in front of one database, for many workers.

Every worker with a direct connection holds database connections of its own; hundreds of them
overload a PostgreSQL server. Through the proxy (workers use --storage grpc://HOST:PORT) the
database sees one process with a bounded pool, whatever the number of workers.

Optuna's proxy protocol carries no locks and no heartbeats, and sweep's guarantees rest on both,
so the storage behind the proxy does that work beside the database:
- the budget: a trial starts (created RUNNING, or a WAITING one taken) only while the study holds
  fewer finished and running trials than its budget, counted under the advisory lock that workers
  with a direct connection take too; a refused start reaches the worker as BUDGET_MARK;
- heartbeats: a worker's heartbeat arrives as the system attribute HEARTBEAT_ATTR and is recorded
  as a real heartbeat (with the database's clock), not stored;
- abandoned trials: every HEARTBEAT_S the proxy fails and re-queues trials of sweep's studies whose
  heartbeat is older than GRACE_S, with the reason, as a directly connected worker does.
"""

from __future__ import annotations

import contextlib
import threading

from optuna.trial import TrialState

from .errors import SweepError
from .recovery import HEARTBEAT_ATTR, HEARTBEAT_S
from .storage import Storage, mask, normalize, open_storage

DEFAULT_PORT = 13000  # Optuna's own default for its proxy
DEFAULT_CONNECTIONS = 16  # database connections the proxy may hold at most; its request threads follow
BUDGET_MARK = "sweep: the study's budget is taken"


class BudgetTaken(Exception):
    """A trial may not start: the study holds its budget of finished and running trials."""


def budget_refused(error: BaseException) -> bool:
    """Whether `error` is a proxy's refusal to start a trial over the budget (a gRPC error)."""
    details = getattr(error, "details", None)
    return callable(details) and BUDGET_MARK in (details() or "")


def lost_proxy_line(error: BaseException) -> str | None:
    """The one line for a gRPC failure of a storage proxy's client, None for any other error."""
    import sys

    grpc = sys.modules.get("grpc")  # loaded only where a grpc:// storage was opened
    if grpc is None or not isinstance(error, grpc.RpcError):
        return None
    code = error.code().name if callable(getattr(error, "code", None)) else "?"
    details = (error.details() if callable(getattr(error, "details", None)) else "") or ""
    line = f"the storage proxy failed ({code}: {details.splitlines()[0][:200] if details else 'no details'})"
    if code in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"):
        line = (f"lost the storage proxy ({code}); nothing stored was lost: once a proxy serves the "
                "database again, start the workers again and the trials they were running are re-queued")
    return line


class ServedStorage(Storage):
    """The storage behind the proxy: Storage plus the budget, heartbeat and stale-trial work that
    workers behind a proxy cannot do themselves."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # One start at a time in this process: waiting requests then hold no database connection
        # (the advisory lock is still what orders this process against directly connected workers).
        self._starts = threading.Lock()

    @contextlib.contextmanager
    def _starting(self, study_id: int):
        if "target_trials" not in self.get_study_user_attrs(study_id):
            yield  # not a study of sweep's: Optuna's own rules
            return
        from .locks import budget_lock
        from .stored import state_counts

        with self._starts, budget_lock(self, self.get_study_name_from_id(study_id)):
            target = int(self.get_study_user_attrs(study_id)["target_trials"])  # as it is now, under the lock
            counts = state_counts(self, study_id)
            taken = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] + counts[TrialState.RUNNING]
            if taken >= target:
                raise BudgetTaken(f"{BUDGET_MARK} ({taken} finished or running of {target})")
            yield

    def _create_new_trial(self, study_id, template_trial=None):
        # (create_new_trial and Optuna's trial cache both come through here)
        if template_trial is not None and template_trial.state != TrialState.RUNNING:
            return super()._create_new_trial(study_id, template_trial)  # queued or added: not a start
        with self._starting(study_id):
            return super()._create_new_trial(study_id, template_trial)

    def set_trial_state_values(self, trial_id, state, values=None):
        if state != TrialState.RUNNING:
            return super().set_trial_state_values(trial_id, state, values)
        try:
            with self._starting(self._study_of(trial_id)):
                return super().set_trial_state_values(trial_id, state, values)
        except BudgetTaken:
            return False  # as when another process took the waiting trial first

    def set_trial_system_attr(self, trial_id, key, value):
        if key == HEARTBEAT_ATTR:
            self.record_heartbeat(trial_id)
            return
        super().set_trial_system_attr(trial_id, key, value)

    def _study_of(self, trial_id: int) -> int:
        import sqlalchemy as sa
        from optuna.storages._rdb.models import TrialModel

        t = TrialModel.__table__
        with self.engine.connect() as con:
            study_id = con.execute(sa.select(t.c.study_id).where(t.c.trial_id == trial_id)).scalar()
        if study_id is None:
            raise KeyError(f"no trial with id {trial_id}")
        return study_id


def _service(storage):
    import grpc
    from optuna.storages._grpc.servicer import OptunaStorageProxyService

    class Service(OptunaStorageProxyService):
        def CreateNewTrial(self, request, context):  # noqa: N802 - gRPC's method name
            try:
                return super().CreateNewTrial(request, context)
            except BudgetTaken as e:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))

    return Service(storage)


def _reap(storage, stop: threading.Event, say) -> None:
    """Fail and re-queue abandoned trials of sweep's studies, every HEARTBEAT_S, until `stop`."""
    import optuna

    from .recovery import fail_stale

    while not stop.wait(HEARTBEAT_S):
        try:
            for frozen in storage.get_all_studies():
                if "target_trials" in frozen.user_attrs:
                    study = optuna.Study(frozen.study_name, storage)
                    for number in fail_stale(study):
                        say(f"study '{frozen.study_name}': trial {number} abandoned (no heartbeat); queued again")
        except Exception as e:  # noqa: BLE001 - a database hiccup: said, and tried again next time
            say(f"checking for abandoned trials failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")


def serve(storage_url: str, host: str, port: int, connections: int, announce) -> None:
    """Serve the storage at `storage_url` on host:port until interrupted."""
    from concurrent.futures import ThreadPoolExecutor

    from optuna.storages._cached_storage import _CachedStorage

    from .dashboard import check_port, exposed
    from .locks import sqlite_writer_lock

    url = normalize(storage_url)
    if url.startswith("grpc://"):
        raise SweepError("--storage: the proxy serves a database (postgresql://... or sqlite:///...), not another proxy")
    try:
        import grpc  # noqa: F401
        from optuna.storages._grpc.auto_generated import api_pb2_grpc
    except ImportError:
        raise SweepError("the storage proxy needs grpcio: pip install 'fer-sweep[proxy]'") from None
    check_port(host, port)
    threads = connections - 2  # each request thread may hold one connection; a start and the reaper one more
    with sqlite_writer_lock(url):  # for SQLite the proxy is the one writer
        served = open_storage(url, create=True, storage_class=ServedStorage, pool_size=threads)
        storage = _CachedStorage(served)  # finished trials are read from the database once
        stop = threading.Event()
        reaper = threading.Thread(target=_reap, args=(storage, stop, announce), daemon=True)
        # gRPC lets several servers share a port by default: a second proxy would then split the workers
        server = grpc.server(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="proxy"),
                             options=[("grpc.so_reuseport", 0)])
        api_pb2_grpc.add_StorageServiceServicer_to_server(_service(storage), server)
        shown = f"[{host}]" if ":" in host else host
        if server.add_insecure_port(f"{shown}:{port}") == 0:
            raise SweepError(f"cannot serve on {host}:{port} (pick another --port)")
        server.start()
        reaper.start()
        if exposed(host):
            announce(f"sweep proxy: --host {host} lets anyone who can reach port {port} of this machine read and write "
                     "every study in the storage: no password, no encryption; keep it on the cluster's private network")
        announce(f"storage proxy for {mask(url)} on grpc://{shown}:{port}, at most {connections} database "
                 "connections (Ctrl-C to stop)")
        try:
            server.wait_for_termination()
        finally:
            stop.set()
            server.stop(grace=1).wait()
            served.engine.dispose()
