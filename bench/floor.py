"""The framework's floor: a Flask endpoint that parses the JSON body and answers a constant, no model."""

from flask import Flask, jsonify, request

app = Flask("floor")


@app.route("/predict", methods=["POST"])
def predict():
    request.get_json()
    return jsonify({"churn_probability": 0.5, "churn": False})
