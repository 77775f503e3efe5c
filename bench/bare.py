"""A bare WSGI app: it reads the body and answers a constant, no framework: the floor of gunicorn itself."""

BODY = b'{"churn_probability": 0.5, "churn": false}'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", HEADERS)
    return [BODY]
