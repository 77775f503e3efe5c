"""The churn service: `gunicorn predict:app`, `waitress-serve predict:app`, or `python predict.py` (development)."""

import gc
import sys

from churn.logs import configure_logging
from churn.model.scoring import ModelLoadError, load_served_model
from churn.serve.app import create_app
from churn.settings import SettingError, Settings

# A bad setting or model file stops the start with one line that says what is wrong, not a traceback.
try:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    app = create_app(load_served_model(settings.model_file), settings)
except (SettingError, ModelLoadError) as e:
    sys.exit(f"churn: {type(e).__name__}: {e}")
# What is loaded now lives as long as the process: the collector need not walk it again at every collection, nor
# touch the pages gunicorn's forked workers share with the master (Python's documented use of gc.freeze).
gc.freeze()

if __name__ == "__main__":
    app.run(host="0.0.0.0", port=settings.port, debug=False)
