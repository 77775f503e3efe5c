"""Serving: the Predictor, the routes, the WSGI layers and what runs around them under gunicorn."""
