"""A new model without a restart: SIGHUP to gunicorn's master, with the new file (and its sidecar) at MODEL_FILE.

gunicorn loads the app once, in the master (preload_app), and on SIGHUP does not import it again: it re-reads its
configuration, calls gunicorn.conf.py's on_reload hook, forks new workers from the master, then stops the old ones
gracefully. So the hook calls reload_model() in the master, before the new workers fork: they start with the new
model, while the old ones finish with the old. The new model serves only once it is loaded and checked as at start
(the safe unpickling, the schema's vocabulary), with a usable sidecar of the same C (a reload never trades a model
for one without its card and explanations) and a warm-up that answers a probability. Otherwise the old model keeps
serving, and a log line and /health/ready's detail say why. The challenger (CHURN_CHALLENGER_MODEL_FILE) is loaded
again with it.

waitress and `python predict.py` have no such signal: they load a new model at a restart.
"""

import gc
import logging

from churn.model.modelfile import ModelLoadError, sidecar_path
from churn.model.scoring import ServedModel, load_served_model
from churn.serve.app import serve
from churn.serve.predictor import Predictor
from churn.serve.routes import PREDICTOR

log = logging.getLogger(__name__)
REFUSED = "reload refused"  # how /health/ready's detail starts the reason


def reload_model(app) -> bool:
    """Serve the model now at the configured path, if it passes; whether it does."""
    current: Predictor = app.extensions[PREDICTOR]
    settings = current.settings
    try:
        model = load_served_model(settings.model_file)
        check_sidecar(model)
        predictor = Predictor.load(settings, model)
        if not predictor.ready:
            raise ModelLoadError(f"model file {model.path}: the warm-up prediction is not a probability")
    except ModelLoadError as e:
        problem = f"{REFUSED}, version {current.model.version} still serves: {e}"
        log.error("%s", problem)
        current.problems[:] = [p for p in current.problems if not p.startswith(REFUSED)] + [problem]
        return False
    serve(app, predictor)
    log.info("model reloaded: version %s serves, replacing %s", model.version, current.model.version)
    # predict.py froze what it loaded (gc.freeze): the old Predictor, a cycle (its endpoints call back into it), is
    # collected only once unfrozen; then what serves now is frozen in its turn.
    del current
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return True


def check_sidecar(model: ServedModel) -> None:
    """The sidecar beside the new model is usable and records the model's C: one left over from the previous model
    would describe another model on /model and explain with another's training means."""
    where = f"model file {model.path}: its sidecar {sidecar_path(model.path).name}"
    if model.sidecar_problem:
        raise ModelLoadError(f"{where} {model.sidecar_problem}")
    params = model.training.get("params")
    recorded = params.get("C") if isinstance(params, dict) else None
    if recorded != model.C:
        raise ModelLoadError(f"{where} records C={recorded!r}, the model has C={model.C!r}: it is another model's")
