"""The OpenAPI 3.1 document, generated from the one customer schema."""

from pydantic import TypeAdapter

from churn.schema import CUSTOMER, SAMPLE_CUSTOMER, Prediction

REF = "#/components/schemas/{model}"
# The service's REQUEST_ID pattern (tests check they agree).
REQUEST_ID_PATTERN = "^[A-Za-z0-9._:-]{1,128}$"

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
        },
    },
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


def openapi_document(settings) -> dict:
    customer_ref = {"$ref": REF.format(model="Customer")}
    prediction_ref = {"$ref": REF.format(model="Prediction")}
    batch = {"type": "array", "items": customer_ref, "minItems": 1, "maxItems": settings.max_customers}
    paths = {
        "/predict": {
            "post": {
                "tags": ["Prediction"],
                "summary": "Churn probability of one customer, or of an array of customers (answered in order)",
                "description": (
                    "Field names and category values may be sent in the model's spelling (`fiber_optic`, "
                    "`monthlycharges`) or the dataset's (`Fiber optic`, `MonthlyCharges`); other fields are ignored."
                ),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"oneOf": [customer_ref, batch]}, "example": SAMPLE_CUSTOMER}
                    },
                },
                "responses": {
                    "200": _json(
                        {"oneOf": [prediction_ref, {"type": "array", "items": prediction_ref}]},
                        "One prediction, or an array of them in the order of the customers sent",
                    ),
                    **{status: _error(text) for status, text in ERROR_STATUSES.items()},
                },
            }
        }
    }
    probes = {
        "/ping": ("Liveness check of the course", {"text/plain": {"schema": {"type": "string", "const": "PONG"}}}),
        "/health/live": ("200 while the process runs", {"application/json": {"schema": _status("alive")}}),
        "/health/ready": (
            "200 once the model is loaded and a warm-up prediction succeeded, else 503",
            {"application/json": {"schema": _status("ready")}},
        ),
        "/model": ("The model card", {"application/json": {"schema": {"$ref": REF.format(model="ModelCard")}}}),
        "/metrics": ("Prometheus text exposition", {"text/plain": {"schema": {"type": "string"}}}),
        "/openapi.json": ("This document", {"application/json": {"schema": {"type": "object"}}}),
    }
    for path, (summary, content) in probes.items():
        paths[path] = {
            "get": {
                "tags": ["Operations"],
                "summary": summary,
                "responses": {"200": {"description": summary, "content": content}},
            }
        }
    paths["/health/ready"]["get"]["responses"]["503"] = _error("Not ready: the warm-up prediction failed")
    for operation in (op for item in paths.values() for op in item.values()):
        operation["parameters"] = [{"$ref": "#/components/parameters/RequestID"}]
        responses = operation["responses"]
        responses.setdefault("404", _error("Unknown path"))
        responses.setdefault("405", _error("Method not allowed on this path"))
        responses.setdefault("500", _error("Internal error: the message quotes the request ID"))
        for response in responses.values():
            response["headers"] = {"X-Request-ID": {"$ref": "#/components/headers/RequestID"}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Churn prediction service",
            "version": "1.0.0",
            "description": "Scores customers of the IBM Telco churn dataset with a logistic regression.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Customer": _schema(CUSTOMER),
                "Prediction": _schema(TypeAdapter(Prediction)),
                "Error": ERROR,
                "ModelCard": MODEL_CARD,
            },
            "parameters": {"RequestID": REQUEST_ID_PARAMETER},
            "headers": {"RequestID": REQUEST_ID_HEADER},
        },
    }
