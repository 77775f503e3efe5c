"""The OpenAPI 3.1 document, generated from the one customer schema."""

from pydantic import TypeAdapter

from churn.schema import CUSTOMER, SAMPLE_CUSTOMER, Prediction

REF = "#/components/schemas/{model}"

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

ERROR_STATUSES = {
    "400": "The body is not valid JSON (malformed, truncated, invalid UTF-8 or nested too deeply)",
    "413": "The body is too large, or the batch has too many customers",
    "415": "The body is not sent as application/json",
    "422": "Valid JSON, but not a valid customer or batch: detail names each field and what it allows",
}


def _schema(adapter: TypeAdapter) -> tuple[dict, dict]:
    schema = adapter.json_schema(ref_template=REF)
    return schema, schema.pop("$defs", {})


def _json(schema: dict, description: str, example=None) -> dict:
    content = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"description": description, "content": {"application/json": content}}


def _error(description: str) -> dict:
    return _json({"$ref": REF.format(model="Error")}, description)


def openapi_document(settings) -> dict:
    customer, _ = _schema(CUSTOMER)
    prediction, _ = _schema(TypeAdapter(Prediction))
    customer_ref = {"$ref": REF.format(model="Customer")}
    prediction_ref = {"$ref": REF.format(model="Prediction")}
    batch = {"type": "array", "items": customer_ref, "minItems": 1, "maxItems": settings.max_customers}
    json_object = {"type": "object"}
    probes = {
        "/ping": ("Liveness check of the course", {"text/plain": {"schema": {"type": "string", "const": "PONG"}}}),
        "/health/live": ("200 while the process runs", {"application/json": {"schema": json_object}}),
        "/model": ("The model card", {"application/json": {"schema": json_object}}),
        "/metrics": ("Prometheus text exposition", {"text/plain": {"schema": {"type": "string"}}}),
        "/openapi.json": ("This document", {"application/json": {"schema": json_object}}),
    }
    paths = {
        path: {"get": {"summary": summary, "responses": {"200": {"description": summary, "content": content}}}}
        for path, (summary, content) in probes.items()
    }
    paths["/health/ready"] = {
        "get": {
            "summary": "200 once the model is loaded and a warm-up prediction succeeded, else 503",
            "responses": {
                "200": _json(json_object, "Ready"),
                "503": _error("Not ready"),
            },
        }
    }
    paths["/predict"] = {
        "post": {
            "summary": "Churn probability of one customer, or of an array of customers (answered in order)",
            "description": (
                "Field names and category values may be sent in the model's spelling (`fiber_optic`, "
                "`monthlycharges`) or the dataset's (`Fiber optic`, `MonthlyCharges`); other fields are ignored."
            ),
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"oneOf": [customer_ref, batch]},
                        "example": SAMPLE_CUSTOMER,
                    }
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
    for operation in (op for item in paths.values() for op in item.values()):
        operation["responses"].setdefault("404", _error("Unknown path"))
        operation["responses"].setdefault("405", _error("Method not allowed on this path"))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Churn prediction service",
            "version": "1.0.0",
            "description": "Scores customers of the IBM Telco churn dataset with a logistic regression.",
        },
        "paths": paths,
        "components": {"schemas": {"Customer": customer, "Prediction": prediction, "Error": ERROR}},
    }
