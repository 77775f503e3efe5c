"""The churn service: `gunicorn predict:app`, `waitress-serve predict:app`, or `python predict.py` (development)."""

import os
from pathlib import Path

from churn.logs import configure_logging
from churn.scoring import load_served_model
from churn.service import Settings, create_app

MODEL_FILE = Path(os.environ.get("MODEL_FILE", Path(__file__).resolve().parent / "model_C=1.0.bin"))

configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
app = create_app(load_served_model(MODEL_FILE), Settings.from_env())

if __name__ == "__main__":
    app.run(host="0.0.0.0", port=int(os.environ.get("PORT", "9696")), debug=False)
