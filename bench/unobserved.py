"""This service without its request observation (request IDs, HTTP metrics, the access log line): what they cost."""

from predict import app

app.wsgi_app = app.extensions["churn.unobserved"]
