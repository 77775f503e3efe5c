"""This service without its drift counts (churn.monitor.live): what they cost. As a model without a reference
profile serves."""

from churn.serve.routes import PREDICTOR
from predict import app

for endpoint in app.extensions[PREDICTOR].endpoints.values():
    endpoint.drift = None
