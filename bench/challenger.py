"""This service with a shadow challenger: its own model file again (the cost does not depend on which model it is)."""

import dataclasses

from churn.serve.app import serve
from churn.serve.predictor import Predictor
from churn.serve.routes import PREDICTOR
from predict import app, settings

shadowed = dataclasses.replace(settings, challenger_model_file=settings.model_file)
serve(app, Predictor.load(shadowed, app.extensions[PREDICTOR].model))
