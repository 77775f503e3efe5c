"""A shadow challenger: a second model (CHURN_CHALLENGER_MODEL_FILE) that scores every customer the served model
(the champion) answers; the answers are the champion's alone, so they never change.

churn.serve.predictor scores both from the same columns (a batch is read once) and the Answer carries the
challenger's probabilities (challenger_probabilities) for the prediction log; observe() counts them for /metrics
(churn.metrics.observe_challenger: both models' tenths, their PSI, how often they agree at the threshold). It is
loaded, checked and warmed up as the champion is; one that fails is left out with a log line and the champion
serves alone.
"""

import logging
from pathlib import Path

import numpy as np

from churn import metrics
from churn.model.schema import SAMPLE_CUSTOMER, Problems, clean_customer
from churn.model.scoring import ModelLoadError, ServedModel, load_served_model

log = logging.getLogger(__name__)


class Challenger:
    def __init__(self, model: ServedModel, threshold: float):
        self.model = model
        self.scorer = model.scorer
        self.threshold = threshold
        warm_up = self.scorer.score_one(clean_customer(SAMPLE_CUSTOMER, Problems()))
        if not 0.0 <= warm_up <= 1.0:
            raise ModelLoadError(f"model file {model.path}: the warm-up prediction gave {warm_up!r}, not a probability")

    def observe(self, answer) -> None:
        """Count an answer's (churn.serve.endpoint.Answer) probabilities of both models."""
        champion, challenger = answer.probabilities, answer.challenger_probabilities
        metrics.observe_challenger(champion, challenger, agreements(champion, challenger, self.threshold))


def agreements(champion: list[float], challenger: list[float], threshold: float) -> int:
    """How many customers the two models put on the same side of the threshold."""
    if len(champion) == 1:
        return int((champion[0] >= threshold) == (challenger[0] >= threshold))
    return int(np.count_nonzero((np.asarray(champion) >= threshold) == (np.asarray(challenger) >= threshold)))


def load_challenger(path: Path | None, threshold: float) -> tuple[Challenger | None, str | None]:
    """(the challenger, None), (None, None) when none is configured, or (None, why it was left out), logged."""
    if path is None:
        return None, None
    try:
        return Challenger(load_served_model(path), threshold), None
    except ModelLoadError as e:
        problem = f"the challenger is left out: {e}"
        log.error("%s", problem)
        return None, problem
