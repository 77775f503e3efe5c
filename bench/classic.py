"""The classic service, as the course (machine-learning-zoomcamp, 05-deployment) writes predict.py.

Kept faithful on purpose, as the benchmark's baseline: no validation, scikit-learn per request. Only the
model path differs: MODEL_FILE, by default our model at the repository root.
"""

import os
import pickle
from pathlib import Path

from flask import Flask, jsonify, request

model_file = os.environ.get("MODEL_FILE", Path(__file__).resolve().parent.parent / "model_C=1.0.bin")

with open(model_file, "rb") as f_in:
    dv, model = pickle.load(f_in)

app = Flask("churn")


@app.route("/predict", methods=["POST"])
def predict():
    customer = request.get_json()

    X = dv.transform([customer])
    y_pred = model.predict_proba(X)[0, 1]
    churn = y_pred >= 0.5

    result = {"churn_probability": float(y_pred), "churn": bool(churn)}

    return jsonify(result)
