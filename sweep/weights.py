"""Keeping the weights of a study's best trials in an Optuna artifact store, and no others.

A kept file and its entry in the storage (what optuna-dashboard lists as the trial's artifact)
come and go together. The entry is a study system attribute, `dashboard:artifacts:TRIAL_ID:ID`,
which optuna-dashboard reads as the trial's artifact: unlike a trial's own attributes it can still
be removed once the trial is finished, which is when a better trial pushes it out of the top K.
Removed entries are set to null, as optuna-dashboard's own delete does.
"""

from __future__ import annotations

import json
import mimetypes
import os
import uuid

import optuna
from optuna.trial import TrialState

from .errors import SweepError
from .locks import budget_lock

ENTRY_PREFIX = "dashboard:artifacts:"  # + "TRIAL_ID:ARTIFACT_ID": optuna-dashboard's trial artifacts
MIMETYPE = "application/x-pytorch"


def entry_key(trial_id: int, artifact_id: str) -> str:
    return f"{ENTRY_PREFIX}{trial_id}:{artifact_id}"


def kept_entries(study: optuna.Study) -> dict[str, dict]:
    """The study's weight entries that are live: key -> artifact meta."""
    out = {}
    for key, value in study._storage.get_study_system_attrs(study._study_id).items():
        if key.startswith(ENTRY_PREFIX) and isinstance(value, str):
            meta = json.loads(value)
            if meta is not None:
                out[key] = meta
    return out


def file_name(study_name: str, number: int) -> str:
    """The name a download gets: the study and trial it is the weights of."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in study_name).strip(".") or "study"
    return f"{safe}-trial-{number}.pt"


class KeptWeights:
    """The top `keep_top` complete trials keep their weights as artifacts; files and entries of
    trials pushed out of the top are removed, pruned and failed trials keep none."""

    def __init__(self, study: optuna.Study, artifact_dir: str, keep_top: int):
        from optuna.artifacts import FileSystemArtifactStore

        path = os.path.abspath(artifact_dir)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:  # checked by the commands before; this is what changed since
            raise SweepError(f"--artifact-dir {artifact_dir}: cannot make the folder ({e.strerror or e})") from None
        self.study, self.keep_top = study, keep_top
        self.store = FileSystemArtifactStore(path)
        self.path = path
        with budget_lock(study._storage, study.study_name):
            if study.user_attrs.get("artifact_dir") != path:
                study.set_user_attr("artifact_dir", path)

    def wanted(self, value: float) -> bool:
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return sum(t.value > value for t in done) < self.keep_top

    def temp_path(self, run_id: str, number: int) -> str:
        return os.path.join(self.path, f"weights-{run_id}-{number}.pt.part")

    def upload(self, trial: optuna.Trial, value: float, tmp: str) -> None:
        """Store the file at `tmp` as the trial's weights (before the trial is told), then remove
        the files and entries of the trials this one pushes out of the top K. The file is in place
        before its entry appears, and an entry goes before its file does: a listed file exists."""
        artifact_id = str(uuid.uuid4())
        try:
            with open(tmp, "rb") as f:
                self.store.write(artifact_id, f)
        finally:
            os.remove(tmp)
        name = file_name(self.study.study_name, trial.number)
        meta = {"artifact_id": artifact_id, "filename": name,
                "mimetype": MIMETYPE, "encoding": mimetypes.guess_type(name)[1]}
        storage = self.study._storage
        storage.set_study_system_attr(self.study._study_id, entry_key(trial._trial_id, artifact_id), json.dumps(meta))
        trial.set_user_attr("weights_artifact", artifact_id)
        self._drop_others(trial, value)

    def _drop_others(self, trial: optuna.Trial, value: float) -> None:
        """Remove the weights of every finished trial outside the top K (this trial counted in);
        trials still running keep theirs until they are told."""
        trials = {t._trial_id: t for t in self.study.get_trials(deepcopy=False)}
        complete = [(t.value, t.number, t._trial_id) for t in trials.values()
                    if t.state == TrialState.COMPLETE and t._trial_id != trial._trial_id]
        complete.append((value, trial.number, trial._trial_id))
        top = {tid for _, _, tid in sorted(complete, key=lambda c: (-c[0], c[1]))[:self.keep_top]}
        storage = self.study._storage
        for key, meta in kept_entries(self.study).items():
            trial_id = int(key[len(ENTRY_PREFIX):].split(":", 1)[0])
            t = trials.get(trial_id)
            if trial_id in top or trial_id == trial._trial_id or t is None or not t.state.is_finished():
                continue
            storage.set_study_system_attr(self.study._study_id, key, json.dumps(None))
            try:
                self.store.remove(meta["artifact_id"])
            except Exception:  # noqa: BLE001 - already removed (ArtifactNotFound) by another process
                pass
