"""create_app: the Flask app assembled from its parts (the Predictor, the routes, the error shape, the web page, the
WSGI layers). Nothing is decided here; each part owns its work."""

from flask import Flask
from flask_swagger_ui import get_swaggerui_blueprint

from churn import errors, logs
from churn.model.scoring import ServedModel
from churn.serve.auth import ApiKeyAuth
from churn.serve.openapi import DOCUMENT_KEY, openapi_document
from churn.serve.predictor import Predictor
from churn.serve.routes import PREDICTOR, api
from churn.serve.web import web
from churn.serve.wsgi import FastPaths, RequestObserver
from churn.settings import Settings

# Swagger UI's assets come from the flask-swagger-ui package, so /docs works offline. validatorUrl None: Swagger UI
# would otherwise send the document's address to validator.swagger.io. It shows no data: open without a key.
swagger_ui = get_swaggerui_blueprint(
    "/docs", "/openapi.json", config={"app_name": "Churn service", "validatorUrl": None}
)
swagger_ui.open = True


OBSERVER = "churn.observer"  # the RequestObserver, in app.extensions


def create_app(model: ServedModel, settings: Settings | None = None) -> Flask:
    settings = settings or Settings()
    predictor = Predictor.load(settings, model)
    app = Flask(__name__, static_folder=None)  # the web page's blueprint serves its own assets
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    for blueprint in (api, web, swagger_ui):
        app.register_blueprint(blueprint)
    errors.register(app, settings.max_body_bytes, logs.request_id)
    app.extensions[DOCUMENT_KEY] = openapi_document(app, settings)
    fast_paths = FastPaths(app)
    # The observer stays outermost, so that a 401 is logged and counted like any answer.
    guarded = ApiKeyAuth(fast_paths, settings.read_api_keys, app) if settings.api_keys else fast_paths
    app.wsgi_app = app.extensions[OBSERVER] = RequestObserver(guarded, app.url_map)
    # By name, for tests and benchmarks: the fast dispatcher, and the service without its request observation.
    app.extensions["churn.fast_paths"] = fast_paths
    app.extensions["churn.unobserved"] = guarded
    serve(app, predictor)
    return app


def serve(app: Flask, predictor: Predictor) -> None:
    """Make predictor the one that answers: at start, and when a reload replaces it (churn.serve.reload)."""
    app.extensions[PREDICTOR] = predictor
    app.extensions["churn.fast_paths"].route(predictor.endpoints)
    app.extensions[OBSERVER].model_version = predictor.model.version
