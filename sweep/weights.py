"""Keeping the weights of a study's best trials in an Optuna artifact store, and no others."""

from __future__ import annotations

import os

import optuna
from optuna.trial import TrialState

from .errors import SweepError
from .locks import budget_lock


class KeptWeights:
    """The top `keep_top` complete trials keep their weights as artifacts; files of trials pushed
    out of the top are deleted, pruned and failed trials keep none."""

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
        """Upload the file at `tmp` (before the trial is told: Optuna refuses artifacts on finished
        trials) and drop the files of the trials this one pushes out of the top K."""
        from optuna.artifacts import upload_artifact

        try:
            artifact_id = upload_artifact(artifact_store=self.store, file_path=tmp, study_or_trial=trial,
                                          mimetype="application/x-pytorch")
            trial.set_user_attr("weights_artifact", artifact_id)
        finally:
            os.remove(tmp)
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ranked = sorted(done, key=lambda t: (-t.value, t.number))
        for t in ranked[self.keep_top - 1:]:  # with this trial in, these fall out of the top K
            aid = t.user_attrs.get("weights_artifact")
            if aid and t.value < value:
                try:
                    self.store.remove(aid)
                except Exception:  # noqa: BLE001 - already removed (ArtifactNotFound) or gone
                    pass
