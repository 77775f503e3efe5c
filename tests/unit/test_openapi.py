"""The OpenAPI document: valid, complete, the validation's own schema, and what the service answers (Flask's test
client)."""

import re

import jsonschema
import pytest
from openapi_spec_validator import validate

from churn.model.schema import FEATURES, SAMPLE_CUSTOMER, InvalidValue
from churn.serve.openapi import REQUEST_ID_PATTERN
from churn.serve.wsgi import REQUEST_ID
from churn.settings import Settings
from tests.helpers import customers


def resolve(document: dict, ref: str):
    node = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node) -> list[str]:
    if isinstance(node, dict):
        return [node.get("$ref")] * ("$ref" in node) + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def test_openapi_document_is_valid_and_complete(app):
    document = app.test_client().get("/openapi.json").get_json()
    validate(document)  # raises on an invalid OpenAPI 3.1 document
    assert document["openapi"].startswith("3.1")
    for ref in refs(document):  # the validator does not resolve every reference
        assert ref.startswith("#/") and resolve(document, ref) is not None
    # Every route of the API blueprint is documented with its methods; the pages (the web form, Swagger UI) are
    # not API operations.
    routes = {
        rule.rule: rule.methods - {"HEAD", "OPTIONS"}
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("api.")
    }
    assert len(routes) == 9
    assert {path: {m.upper() for m in item} for path, item in document["paths"].items()} == routes
    error = {"$ref": "#/components/schemas/Error"}
    for item in document["paths"].values():
        for operation in item.values():
            assert {"404", "405", "500"} <= operation["responses"].keys()
            for status, response in operation["responses"].items():
                if status >= "400":
                    assert response["content"]["application/json"]["schema"] == error
                assert "X-Request-ID" in response["headers"]
    assert REQUEST_ID_PATTERN == f"^{REQUEST_ID.pattern}$"


def test_openapi_customer_schema_is_the_validation_schema(app):
    """The document states the rule Feature.clean applies: every spelling and number it takes, and no other."""
    document = app.test_client().get("/openapi.json").get_json()
    customer = document["components"]["schemas"]["Customer"]
    assert customer["required"] == [f.name for f in FEATURES]

    def valid(schema: dict, value) -> bool:
        return any(
            (isinstance(value, str) and re.fullmatch(choice["pattern"], value) is not None)
            if "pattern" in choice
            else (value in choice["enum"] if "enum" in choice else not isinstance(value, str | bool))
            for choice in schema["anyOf"]
        )

    for feature in FEATURES:
        schema = customer["properties"][feature.name]
        if feature.values:
            assert schema["anyOf"][0]["enum"] == list(feature.clean_values)
            spellings = [*feature.accepted_values, *(v.upper() for v in feature.values)]
            spellings += [v.title() for v in feature.values]
            wrong = [v + "x" for v in feature.values] + ["", "fiber", "Month to month"]
        else:
            number = schema["anyOf"][0]
            assert number["type"] == ("integer" if feature.integer else "number")
            assert (number["minimum"], number["maximum"]) == (feature.minimum, feature.maximum)
            spellings = [0, 1, "1", " 1 ", "1.0", "+1", "01"] + ([" "] if feature.blank_is_zero else [])
            wrong = ["nan", "inf", "1_0", "0x1", "one", True, "1\n", "1e0", "-1", str(feature.maximum + 1)]
        for value in spellings:
            assert valid(schema, value), (feature.name, value)
            feature.clean(value)
        for value in wrong:
            assert not valid(schema, value), (feature.name, value)
            with pytest.raises(InvalidValue):
                feature.clean(value)


@pytest.mark.parametrize("settings", [Settings(max_customers=7)])
def test_openapi_predict_documents_both_bodies_and_every_error(app):
    predict = app.test_client().get("/openapi.json").get_json()["paths"]["/predict"]["post"]
    single, batch = predict["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert single == {"$ref": "#/components/schemas/Customer"}
    assert batch == {"type": "array", "items": single, "minItems": 1, "maxItems": 7}
    assert {"200", "400", "413", "415", "422", "503"} <= predict["responses"].keys()


RESPONSE_CASES = [
    ("GET", "/ping", {}),
    ("GET", "/health/live", {}),
    ("GET", "/health/ready", {}),
    ("GET", "/model", {}),
    ("GET", "/metrics", {}),
    ("GET", "/openapi.json", {}),
    ("POST", "/predict", {"json": SAMPLE_CUSTOMER}),
    ("POST", "/predict", {"json": customers(3)}),
    ("POST", "/predict", {"data": b"[", "content_type": "application/json"}),
    ("POST", "/predict", {"json": customers(4)}),
    ("POST", "/predict", {"data": "x", "content_type": "text/plain"}),
    ("POST", "/predict", {"json": [SAMPLE_CUSTOMER, dict(SAMPLE_CUSTOMER, contract="forever")]}),
    ("GET", "/nowhere", {}),
    ("DELETE", "/model", {}),
]


@pytest.mark.parametrize("settings", [Settings(max_customers=3)])
def test_responses_match_the_document(app):
    client = app.test_client()
    document = client.get("/openapi.json").get_json()
    statuses = set()
    for method, path, options in RESPONSE_CASES:
        response = client.open(path, method=method, **options)
        statuses.add(response.status_code)
        item = document["paths"].get(path, document["paths"]["/ping"])  # an unknown path answers like any
        operation = item.get(method.lower(), next(iter(item.values())))
        described = operation["responses"][str(response.status_code)]
        schema = described["content"][response.mimetype]["schema"]
        body = response.get_json() if response.mimetype == "application/json" else response.get_data(as_text=True)
        jsonschema.validate(body, {**schema, "components": document["components"]})
        assert re.fullmatch(REQUEST_ID_PATTERN, response.headers["X-Request-ID"])
    assert statuses == {200, 400, 404, 405, 413, 415, 422}
