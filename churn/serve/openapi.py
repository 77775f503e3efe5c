"""The OpenAPI 3.1 document, generated from the one customer schema."""

from pydantic import TypeAdapter

from churn import logs
from churn.model.explain import MAX_REASONS
from churn.model.schema import (
    BLANK_TEXT,
    FEATURES,
    ID_COLUMN,
    ID_MAX,
    ID_MIN,
    MAX_DETAILS,
    MAX_FIELDS,
    SAMPLE_CUSTOMER,
    Feature,
    Prediction,
)

REF = "#/components/schemas/{model}"
REQUEST_ID_PATTERN = f"^{logs.REQUEST_ID_PATTERN}$"

ERROR = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "What went wrong, in one sentence"},
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer", "description": "Position of the customer in a batch"},
                    "field": {"type": ["string", "null"], "description": "The field as the client sent it"},
                    "message": {"type": "string"},
                    "type": {"type": "string", "enum": ["string", "integer", "number"]},
                    "allowed": {"type": "array", "items": {"type": "string"}},
                    "minimum": {"type": "number"},
                    "maximum": {"type": ["number", "null"]},
                },
            },
            "maxItems": MAX_DETAILS,
        },
        "errors": {"type": "integer", "description": "With invalid customers: how many errors in all"},
        "invalid_customers": {"type": "integer", "description": "With invalid customers: how many had an error"},
    },
}
ECMA_SPECIAL = set("\\^$.|?*+()[]{}/")


def any_spelling(name: str) -> str:
    """A pattern for every text that the training's clean_text (lower case, spaces to _) turns into name."""
    parts = []
    for ch in name:
        if ch == "_":
            parts.append("[ _]")
        elif ch.lower() != ch.upper():
            parts.append(f"[{ch.upper()}{ch.lower()}]")
        else:
            parts.append("\\" + ch if ch in ECMA_SPECIAL else ch)
    return "".join(parts)


def value_schema(feature: Feature) -> dict:
    if feature.categorical:
        spellings = "|".join(any_spelling(v) for v in feature.clean_values)
        described = f"One of {', '.join(feature.clean_values)}; case does not matter, and a space stands for _"
        choices = [{"enum": list(feature.clean_values)}, {"type": "string", "pattern": f"^({spellings})$"}]
    else:
        number = {"type": "integer" if feature.integer else "number"}
        number |= {"minimum": feature.minimum, "maximum": feature.maximum}
        described = f"A {feature.kind} {feature.range}, as a number or decimal text"
        choices = [number, {"type": "string", "pattern": feature.text_pattern}]
        if feature.blank_is_zero:
            described += "; blank text counts as 0"
            choices.append({"type": "string", "pattern": BLANK_TEXT})
    return {"description": f"{feature.description}. {described}", "anyOf": choices}


ID_SCHEMA = {
    "type": ["string", "integer"],
    "minimum": ID_MIN,
    "maximum": ID_MAX,
    "description": "Your id of the customer, echoed in its answer",
}
EXPLANATION = {
    "type": "object",
    "required": ["churn_probability", "churn", "base_log_odds", "contributions", "reasons"],
    "properties": {
        ID_COLUMN: ID_SCHEMA,
        "churn_probability": {"type": "number", "minimum": 0, "maximum": 1},
        "churn": {"type": "boolean"},
        "base_log_odds": {"type": "number", "description": "The intercept plus every term's mean over training"},
        "contributions": {
            "type": "object",
            "description": "Each feature's push on the log-odds: + toward churn, - away; +0.7 multiplies the odds "
            "by e^0.7, about 2",
            "properties": {f.name: {"type": "number"} for f in FEATURES},
            "required": [f.name for f in FEATURES],
            "additionalProperties": False,
        },
        "reasons": {
            "type": "array",
            "maxItems": MAX_REASONS,
            "description": "The features that push most toward churn, largest first",
            "items": {
                "type": "object",
                "required": ["feature", "value", "contribution", "text"],
                "properties": {
                    "feature": {"type": "string", "enum": [f.name for f in FEATURES]},
                    "value": {"type": ["string", "number"], "description": "The customer's value, model's spelling"},
                    "contribution": {"type": "number", "exclusiveMinimum": 0},
                    "text": {"type": "string", "description": "The reason in a sentence"},
                },
            },
        },
    },
}
CUSTOMER = {
    "title": "Customer",
    "type": "object",
    "description": (
        f"The {len(FEATURES)} features, all required. A field may be named as the model names it (monthlycharges) "
        "or in any spelling the training's cleaning turns into that name: the dataset's (MonthlyCharges), any case. "
        "Categories likewise: fiber_optic, Fiber optic, FIBER OPTIC. Numbers are JSON numbers or numeric text "
        '("12", " 29.85 ", "1e3"); a whole number for an integer field (12.0 counts); no booleans, NaN or '
        "infinities. Two spellings of one field must agree. Other fields (Churn, ...) are ignored; "
        f"{ID_COLUMN}, when sent, is echoed in the answer."
    ),
    # Other spellings of a name are described above rather than as patternProperties: JSON Schema cannot say that
    # two spellings of one field must agree, so a pattern would declare valid what the service refuses.
    "properties": {**{f.name: value_schema(f) for f in FEATURES}, ID_COLUMN: ID_SCHEMA},
    "required": [f.name for f in FEATURES],
    "maxProperties": MAX_FIELDS,
}

MODEL_CARD = {
    "type": "object",
    "required": ["model_file", "sha256", "sklearn_version", "threshold", "features", "training"],
    "properties": {
        "model_file": {"type": "string"},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "Of the model file"},
        "sklearn_version": {"type": "string", "description": "The scikit-learn the model was pickled with"},
        "scorer": {"type": "string"},
        "threshold": {"type": "number", "minimum": 0, "maximum": 1},
        "features": {
            "type": "object",
            "description": "Each feature: its type and allowed values or range",
            "additionalProperties": {"type": "object", "required": ["type"]},
        },
        "training": {
            "type": ["object", "null"],
            "description": "What train.py recorded beside the model (data sha256, CV and test AUC, parameters, "
            "library versions); null when it recorded nothing",
        },
    },
}

ERROR_STATUSES = {
    "400": "The body is not valid JSON (malformed, truncated, invalid UTF-8 or nested too deeply)",
    "413": "The body is too large, or the batch has too many customers",
    "415": "The body is not sent as application/json",
    "422": "Valid JSON, but not a valid customer or batch: detail names each field and what it allows",
    "503": "The model is not ready: its warm-up prediction failed",
}

# Any value is accepted (an unusable one is replaced), so only the answered ID is bound to the pattern.
REQUEST_ID_PARAMETER = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": "A request ID of yours, sent back and written in the request's log line when it matches "
    f"{REQUEST_ID_PATTERN}; otherwise, or when absent, the service makes one (32 hex digits)",
    "schema": {"type": "string"},
}
REQUEST_ID_HEADER = {
    "description": "The request's ID, as sent or as made by the service; its log line carries it",
    "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
}


def _schema(adapter: TypeAdapter) -> dict:
    schema = adapter.json_schema(ref_template=REF)
    schema.pop("$defs", None)
    return schema


def _json(schema: dict, description: str, example=None) -> dict:
    content = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"description": description, "content": {"application/json": content}}


def _error(description: str) -> dict:
    return _json({"$ref": REF.format(model="Error")}, description)


def _status(value: str) -> dict:
    return {"type": "object", "required": ["status"], "properties": {"status": {"const": value}}}


# With CHURN_API_KEYS set, either header carries a key (churn.serve.auth); Swagger UI's Authorize button offers both.
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <one of CHURN_API_KEYS>"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def _customers_operation(summary: str, answer: str, description: str, batch: dict) -> dict:
    """POST /predict and /explain take the same body and fail alike; they differ in what each customer gets."""
    customer_ref, answer_ref = {"$ref": REF.format(model="Customer")}, {"$ref": REF.format(model=answer)}
    return {
        "tags": ["Prediction"],
        "summary": summary,
        "description": (
            f"{description} Field names and category values may be sent in the model's spelling (`fiber_optic`, "
            "`monthlycharges`), the dataset's (`Fiber optic`, `MonthlyCharges`), or any case; numbers as JSON "
            "numbers or decimal text; other fields are ignored; `customerID` is echoed. See the Customer schema."
        ),
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [customer_ref, {"items": customer_ref, **batch}]},
                    "example": SAMPLE_CUSTOMER,
                }
            },
        },
        "responses": {
            "200": _json(
                {"oneOf": [answer_ref, {"type": "array", "items": answer_ref}]},
                "One answer, or an array of them in the order of the customers sent",
            ),
            **{status: _error(text) for status, text in ERROR_STATUSES.items()},
        },
    }


def _batch(settings) -> dict:
    return {"type": "array", "minItems": 1, "maxItems": settings.max_customers}


def PREDICT(settings) -> dict:
    return _customers_operation(
        "Churn probability of one customer, or of an array of customers (answered in order)",
        "Prediction",
        "",
        _batch(settings),
    )


def EXPLAIN(settings) -> dict:
    operation = _customers_operation(
        "Why each customer is at risk: the log-odds split into one contribution per feature",
        "Explanation",
        "Exact SHAP values of the logistic regression (interventional, the training split as background): "
        "base_log_odds + the sum of contributions is the customer's log-odds, whose sigmoid is churn_probability.",
        _batch(settings),
    )
    operation["responses"]["404"] = _error(
        "The model file has no explanation statistics beside it: retrain with python train.py"
    )
    return operation


def _get(summary: str, content: dict, tag: str = "Operations"):
    def operation(settings) -> dict:
        return {"tags": [tag], "summary": summary, "responses": {"200": {"description": summary, "content": content}}}

    return operation


PING = _get("Liveness check of the course", {"text/plain": {"schema": {"type": "string", "const": "PONG"}}})
LIVE = _get("200 while the process runs", {"application/json": {"schema": _status("alive")}})
_READY = _get(
    "200 once the model is loaded and a warm-up prediction succeeded, else 503",
    {"application/json": {"schema": _status("ready")}},
)


def READY(settings) -> dict:
    operation = _READY(settings)
    operation["responses"]["503"] = _error("Not ready: the warm-up prediction failed")
    return operation


MODEL = _get("The model card", {"application/json": {"schema": {"$ref": REF.format(model="ModelCard")}}})
METRICS = _get("Prometheus text exposition", {"text/plain": {"schema": {"type": "string"}}})
DOCUMENT = _get("This document", {"application/json": {"schema": {"type": "object"}}})
DOCUMENT_KEY = "churn.serve.openapi"  # the app's document, in app.extensions


def _common(operation: dict, open: bool, api_keys: bool) -> dict:
    """What every operation has: the request ID both ways, the errors any request can meet, and its security."""
    operation["parameters"] = [{"$ref": "#/components/parameters/RequestID"}]
    responses = operation["responses"]
    if api_keys:  # the probes and this document stay open: see churn.serve.auth
        if open:
            operation["security"] = []
        else:
            responses["401"] = _error("No API key, or not a valid one (Authorization: Bearer, or X-API-Key)")
    responses.setdefault("404", _error("Unknown path"))
    responses.setdefault("405", _error("Method not allowed on this path"))
    responses.setdefault("500", _error("Internal error: the message quotes the request ID"))
    for response in responses.values():
        response["headers"] = {"X-Request-ID": {"$ref": "#/components/headers/RequestID"}}
    return operation


def openapi_document(app, settings) -> dict:
    """The document of every route whose view is documented (churn.serve.routes.documented), in the routes' order."""
    paths = {}
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if getattr(view, "openapi", None) is None:
            continue
        method = next(m for m in ("POST", "GET") if m in rule.methods).lower()
        paths.setdefault(rule.rule, {})[method] = _common(view.openapi(settings), view.open, bool(settings.api_keys))
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "Churn prediction service",
            "version": "1.0.0",
            "description": "Scores customers of the IBM Telco churn dataset with a logistic regression.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Customer": CUSTOMER,
                "Prediction": _schema(TypeAdapter(Prediction)),
                "Explanation": EXPLANATION,
                "Error": ERROR,
                "ModelCard": MODEL_CARD,
            },
            "parameters": {"RequestID": REQUEST_ID_PARAMETER},
            "headers": {"RequestID": REQUEST_ID_HEADER},
            "securitySchemes": SECURITY_SCHEMES,
        },
    }
    if settings.api_keys:
        document["security"] = [{name: []} for name in SECURITY_SCHEMES]
    return document
