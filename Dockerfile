# The churn service: gunicorn serving predict:app with the project's gunicorn.conf.py on $PORT (default 9696),
# and the model named by the MODEL_FILE build argument. It holds what serving imports and nothing else: the
# Pipfile's [packages], not the training packages in [dev-packages] (scikit-learn, scipy, pandas...).

# ---- deps: pipenv installs the locked serving packages into a virtualenv, the only thing the runtime takes
# from this stage (pipenv itself, about 40 MB, stays behind).
FROM python:3.11-slim AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIPENV_VERBOSITY=-1
# The same pipenv as the Makefile, so that the lock reads the same way here as on a workstation; and a
# virtualenv which, first on PATH, is the "system" Python that `pipenv install --system` installs into.
RUN pip install pipenv==2026.10.3 \
 && python -m venv --without-pip /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv
WORKDIR /app
# Dependencies before code, so that this layer is rebuilt only when the lock changes. Without --dev only the
# serving packages ([packages]) are installed; --deploy refuses a lock that is out of date with the Pipfile.
COPY Pipfile Pipfile.lock ./
RUN pipenv install --system --deploy \
 && rm -rf /root/.cache

# ---- runtime
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The service runs as this user (with a home, as tools expect one). The code stays root's, so the
# service cannot change it.
RUN useradd --no-log-init --uid 10001 --create-home --shell /usr/sbin/nologin churn
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
# Pipfile.lock too: scikit-learn is not installed here, so the model loader takes the version the lock pins
# for training as the one a model must have been pickled with (churn/model/scoring.py).
COPY ["gunicorn.conf.py", "predict.py", "Pipfile.lock", "./"]
COPY churn/ churn/
# The model served: any model_*.bin that train.py made, with the metrics it wrote beside it, which the /model
# card reports (`build --build-arg MODEL_FILE=model_C=0.1.bin .`). Only this one enters the image, and the
# service serves it by default (predict.py reads $MODEL_FILE). Elastic Beanstalk builds with this default:
# to deploy another model there, change it here. Last, so that another model rebuilds only this layer.
ARG MODEL_FILE=model_C=1.0.bin
COPY ["${MODEL_FILE}", "${MODEL_FILE}.json", "./"]
ENV MODEL_FILE=/app/${MODEL_FILE}

USER 10001
EXPOSE 9696

# The slim image has no curl; urlopen raises on a refused connection or a non-2xx answer, failing the check.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('PORT', '9696'), timeout=2)"]

# gunicorn.conf.py's defaults hold here as behind nginx: one gthread worker per CPU the container may use (its CPU
# quota, not the host's CPUs), 2 threads each, connections kept open between requests for a proxy in front to reuse.
# Exec form: gunicorn is PID 1 and gets the engine's SIGTERM itself, which it answers with a graceful shutdown
# (in-flight requests get graceful_timeout, 8 s in gunicorn.conf.py, under `docker stop`'s 10 s).
CMD ["gunicorn", "--config", "gunicorn.conf.py", "predict:app"]
