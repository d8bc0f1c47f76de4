"""`sweep predict`: emotion probabilities for image files, with the best kept weights of a study."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from data import CLASSES, equalize

from . import attrs, paths
from .errors import SweepError
from .study_file import parse_study


def load_image(path: str) -> np.ndarray:
    """Any image file -> (48, 48) uint8 grayscale, resized and histogram-equalised as in training
    (16-bit images scaled, not clipped: data.images)."""
    from PIL import UnidentifiedImageError

    from data.images import ImageError, read_gray48

    p = Path(path)
    paths.regular_file(p)  # a FIFO would wait forever, a device never end
    try:
        arr = read_gray48(p)
    except ImageError as e:
        raise SweepError(f"{path}: {e}") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise SweepError(f"{path}: not a readable image ({type(e).__name__})") from None
    return equalize(arr[None])[0]


def best_with_weights(study: optuna.Study) -> tuple[optuna.trial.FrozenTrial, str]:
    """The best complete trial whose weights are still in the artifact store, and their file."""
    from optuna.artifacts import FileSystemArtifactStore

    root = study.user_attrs.get("artifact_dir")
    if not isinstance(root, str) or not root or not os.path.isdir(root):
        raise SweepError(f"study '{study.study_name}' kept no weights here (artifact dir "
                         f"{root or 'not recorded'}); run the sweep with --keep-top K")
    store = FileSystemArtifactStore(root)
    ranked = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: (-t.value, t.number))
    base = os.path.realpath(store._base_path)
    for t in ranked:
        aid = t.user_attrs.get("weights_artifact")
        if not isinstance(aid, str) or not aid:
            continue
        # An artifact id is a file name inside the store: never a path that leads out of it.
        path = os.path.realpath(os.path.join(base, aid))
        if os.path.dirname(path) != base or os.sep in aid or aid in (".", ".."):
            raise SweepError(f"study '{study.study_name}', trial {t.number}: weights_artifact {aid!r} is not an "
                             f"artifact id of {root}; refusing to open it")
        if os.path.isfile(path):
            return t, path
    raise SweepError(f"study '{study.study_name}': no complete trial has weights in {root}")


def predict(study: optuna.Study, images: list[str]) -> tuple[int, list[dict]]:
    import torch

    from model import FERNet

    arrays = [load_image(p) for p in images]  # every file checked before any work
    trial, weights = best_with_weights(study)
    stored = attrs.study_attrs(study.user_attrs)
    if "definition" not in stored:
        raise SweepError(f"study '{study.study_name}': its stored definition was rewritten by another client and "
                         "cannot be read, so the weights' network is unknown")
    spec = parse_study(json.loads(stored["definition"]), Path(stored.get("study_file", "study")))
    width = spec.config_for(trial.params, seed=0).width
    net = FERNet(width)
    try:
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except Exception as e:  # noqa: BLE001 - truncated, overwritten or foreign: one line, not a traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SweepError(f"trial {trial.number}'s weights ({weights}) cannot be loaded: {first[:200]}") from None
    net.eval()
    x = torch.from_numpy(np.stack(arrays)).unsqueeze(1).float().div(255.0)
    with torch.no_grad():
        probs = torch.softmax(net(x), dim=1).numpy()
    out = []
    for path, p in zip(images, probs):
        out.append({"image": path, "emotion": CLASSES[int(p.argmax())],
                    "probabilities": {c: round(float(v), 6) for c, v in zip(CLASSES, p)}})
    return trial.number, out


SYNTHETIC_NOTE = ("these weights were trained on the built-in synthetic faces, not FER2013: "
                  "the model has never seen a real face, and its answers mean nothing for one")


def trained_on(study: optuna.Study) -> str:
    from .attrs import text

    return text(study.user_attrs.get("data_name")) or "unknown"


def format_predictions(trial_number: int, rows: list[dict], data_name: str = "FER2013") -> str:
    lines = [f"weights of trial {trial_number} (trained on {data_name})"]
    if data_name == "synthetic":
        lines.append(f"note: {SYNTHETIC_NOTE}")
    for r in rows:
        ranked = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])
        lines.append(f"{r['image']}: {r['emotion']}  (" + ", ".join(f"{c} {v:.1%}" for c, v in ranked[:3]) + ")")
    return "\n".join(lines)
