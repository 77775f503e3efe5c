"""This service without its request observation (request IDs, HTTP metrics, the access log line): what they cost."""

from predict import app

# create_app wraps the app in RequestObserver last; unwrapping it leaves everything else as served.
app.wsgi_app = app.wsgi_app.wsgi_app
