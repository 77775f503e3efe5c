"""The web page: GET / serves a form generated from the schema and a CSV upload; both call POST /explain."""

from flask import Blueprint, render_template, url_for

from churn.model.schema import FEATURES, SAMPLE_CUSTOMER

# The assets get their own URL prefix: Flask(__name__) in churn.serve.app also serves churn/serve/static at /static,
# and two rules for one URL would make which one answers an accident of registration order.
web = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/web/static")
web.open = True  # the page and its assets hold no data, and must load to ask for an API key (churn.serve.auth)

# What the script needs from the schema: which columns are numbers, under either spelling of their name, and the
# schema's one rule for a number written as text (Feature.text_pattern, a regular expression JavaScript reads alike),
# so that the page sends as a number exactly the text the API and score.py would read as one.
PAGE_SCHEMA = [
    {"name": f.name, "column": f.column, "numeric": not f.categorical}
    | ({} if f.categorical else {"text_pattern": f.text_pattern})
    for f in FEATURES
]

# Everything the page loads comes from this server; the policy makes a CDN link or injected script fail loudly.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@web.get("/")
def index():
    html = render_template(
        "index.html",
        features=FEATURES,
        sample=SAMPLE_CUSTOMER,
        schema=PAGE_SCHEMA,
        explain_url=url_for("api.explain"),
    )
    return html, {"Content-Security-Policy": CONTENT_SECURITY_POLICY}
