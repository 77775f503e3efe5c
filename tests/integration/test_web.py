"""The web page in headless Chromium against the real app under waitress: form, explanation chart, CSV upload,
errors, keyboard, phone, and the API key prompt."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from churn.model.explain import make_explainer
from churn.model.schema import FEATURES, FEATURES_BY_NAME, SAMPLE_CUSTOMER
from churn.model.scoring import load_served_model
from devtools import MODEL_FILE, ROOT, free_port, running_server, waitress_command
from tests.helpers import without_ids

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
# Playwright's own waits are in milliseconds; the page only waits on the local server.
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("web") / "server.log"
    with running_server(waitress_command(port), port, log_path=log) as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: make test installs it (scripts/install_debian.sh)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def checked_page(browser, url, viewport=None):
    """A fixture's page: after the test, no page error, console error or failed response may have happened."""
    page = open_page(browser, url, viewport)
    yield page
    problems = page.problems
    page.context.close()
    assert problems == []


def open_page(browser, url, viewport=None):
    """A fresh context at `url`; script errors, console errors and failed loads are kept to be asserted on.

    An error status from /predict or /explain is the API's answer, which the page shows, so it is no problem; the
    console's own line for it ("Failed to load resource") is left to the response check.
    """
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.problems = []

    def on_console(message):
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            page.problems.append(message.text)

    def on_response(response):
        if response.status >= 400 and not response.url.endswith(("/predict", "/explain")):
            page.problems.append(f"{response.status} {response.url}")

    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.on("console", on_console)
    page.on("response", on_response)
    page.goto(url)
    return page


@pytest.fixture
def page(browser, server_url):
    yield from checked_page(browser, server_url)


@pytest.fixture
def phone_page(browser, server_url):
    yield from checked_page(browser, server_url, PHONE)


def api(url, body, endpoint="/predict", **headers):
    response = requests.post(f"{url}{endpoint}", json=body, headers=headers, timeout=30)
    return response.status_code, response.json()


def control(page, name):
    return page.locator(f"#f-{name}")


def wait_for_result(page):
    expect(page.locator("#result[data-probability]")).to_be_attached()
    result = page.locator("#result")
    return float(result.get_attribute("data-probability")), result.get_attribute("data-churn")


def raw_rows(source: Path, count: int) -> list[dict]:
    """The dataset's first `count` rows, spelled as in the file."""
    with open(source, newline="") as f:
        return [row for _, row in zip(range(count), csv.DictReader(f), strict=False)]


def with_numbers(row: dict) -> dict:
    """A CSV row as the page sends it: the schema's numbers as JSON numbers (a blank TotalCharges stays text)."""
    numbers = {f.column: int if f.integer else float for f in FEATURES if not f.values}
    return {k: numbers[k](v) if k in numbers and v.strip() else v for k, v in row.items()}


def write_rows(rows: list[dict], target: Path, **options) -> Path:
    with open(target, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), **options)
        writer.writeheader()
        writer.writerows(rows)
    return target


def upload(page, path):
    page.locator("#csv-file").set_input_files(str(path))
    page.locator("#upload-button").click()


def table_rows(page):
    """(customerID, full probability, decision text, churn, main reason) for each row of the scores table."""
    return page.locator("#scores tbody tr").evaluate_all(
        """rows => rows.map(r => [r.cells[0].textContent, r.dataset.probability, r.cells[2].textContent,
                                  r.dataset.churn, r.cells[3].textContent])"""
    )


def test_the_form_is_the_schema_prefilled_with_the_sample_customer(page, server_url):
    response = requests.get(server_url, timeout=10)
    assert response.status_code == 200 and "default-src 'self'" in response.headers["Content-Security-Policy"]
    names = page.locator("#customer-form [name]").evaluate_all("controls => controls.map(c => c.name)")
    assert names == [f.name for f in FEATURES]
    for feature in FEATURES:
        element = control(page, feature.name)
        # Every control has a visible label naming its column and a hint with its description.
        assert page.locator(f"label[for='f-{feature.name}']").inner_text() == feature.column
        expect(element).to_have_accessible_description(feature.description)
        if feature.categorical:
            options = element.locator("option").evaluate_all("os => os.map(o => [o.value, o.textContent])")
            assert options == [list(pair) for pair in zip(feature.clean_values, feature.values, strict=True)]
            expect(element).to_have_value(SAMPLE_CUSTOMER[feature.name])
        else:
            expect(element).to_have_attribute("type", "number")
            assert float(element.get_attribute("min")) == feature.minimum
            assert float(element.get_attribute("max")) == feature.maximum
            expect(element).to_have_attribute("step", "1" if feature.integer else "any")
            assert float(element.input_value()) == SAMPLE_CUSTOMER[feature.name]
    # Nothing is loaded from another origin.
    sources = page.locator("script[src], link[href]").evaluate_all("els => els.map(e => e.src || e.href)")
    assert sources and all(source.startswith(server_url + "/") for source in sources)


def test_submitting_the_form_shows_the_apis_probability(page, server_url, tmp_path):
    page.locator("#predict-button").click()
    probability, churn = wait_for_result(page)
    status, answer = api(server_url, SAMPLE_CUSTOMER)
    assert status == 200
    assert probability == answer["churn_probability"]
    assert churn == json.dumps(answer["churn"])
    expect(page.locator("#probability")).to_have_text(f"{answer['churn_probability'] * 100:.1f} %")
    expect(page.locator("#decision")).to_have_text("likely to churn" if answer["churn"] else "not likely to churn")
    bar_width = page.locator("#result-bar").evaluate("bar => bar.style.width")
    assert float(bar_width.removesuffix("%")) == pytest.approx(answer["churn_probability"] * 100)

    # A second, different customer: the page sends what the controls say, in the model's spelling.
    control(page, "contract").select_option(label="Two year")
    control(page, "paymentmethod").select_option(label="Bank transfer (automatic)")
    control(page, "tenure").fill("48")
    control(page, "totalcharges").fill("1432.8")
    page.locator("#predict-button").click()
    changed = {
        **SAMPLE_CUSTOMER,
        "contract": "two_year",
        "paymentmethod": "bank_transfer_(automatic)",
        "tenure": 48,
        "totalcharges": 1432.8,
    }
    status, answer = api(server_url, changed)
    assert status == 200 and answer["churn_probability"] != probability
    expect(page.locator("#result")).to_have_attribute("data-probability", str(answer["churn_probability"]))
    page.screenshot(path=tmp_path / "form.png", full_page=True)
    assert (tmp_path / "form.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_keyboard_reaches_every_control_and_submits(page, server_url):
    control(page, FEATURES[0].name).focus()
    visited = []
    for _ in range(len(FEATURES) + 5):
        visited.append(page.evaluate("document.activeElement.id"))
        if visited[-1] == "predict-button":
            break
        page.keyboard.press("Tab")
    assert visited == [f"f-{f.name}" for f in FEATURES] + ["predict-button"]
    page.keyboard.press("Enter")
    probability, _ = wait_for_result(page)
    assert probability == api(server_url, SAMPLE_CUSTOMER)[1]["churn_probability"]
    # The focus stays where the keyboard left it, ready for another try.
    expect(page.locator("#predict-button")).to_be_focused()


@pytest.mark.parametrize("tenure", ["-1", "1201"])
def test_an_api_error_is_shown_next_to_its_field(page, server_url, tmp_path, tenure):
    page.locator("#predict-button").click()
    wait_for_result(page)
    control(page, "tenure").fill(tenure)
    page.locator("#predict-button").click()
    status, answer = api(server_url, {**SAMPLE_CUSTOMER, "tenure": int(tenure)})
    assert status == 422 and [d["field"] for d in answer["detail"]] == ["tenure"]
    error = page.locator("#f-tenure-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text(answer["detail"][0]["message"])
    assert error.inner_text().count("0 to 1200") == 1, "the range is said once"
    # Next to its field: in the tenure control's own box, and announced as part of its description.
    assert error.evaluate("e => e.parentElement.contains(document.getElementById('f-tenure'))")
    expect(control(page, "tenure")).to_have_attribute("aria-invalid", "true")
    expect(control(page, "tenure")).to_be_focused()
    expect(control(page, "tenure")).to_have_accessible_description(
        f"{FEATURES_BY_NAME['tenure'].description} {error.inner_text()}"
    )
    assert page.locator(".field-error:visible").count() == 1
    # The earlier prediction is gone: it was for another customer.
    expect(page.locator("#result[data-probability]")).to_have_count(0)
    page.screenshot(path=tmp_path / "error.png", full_page=True)

    # Fixing the value clears the error and gives a prediction.
    control(page, "tenure").fill("12")
    page.locator("#predict-button").click()
    wait_for_result(page)
    expect(error).to_be_hidden()
    expect(control(page, "tenure")).not_to_have_attribute("aria-invalid", "true")


def test_an_empty_number_is_named_by_the_api(page):
    control(page, "monthlycharges").fill("")
    page.locator("#predict-button").click()
    expect(page.locator("#f-monthlycharges-error")).to_be_visible()
    expect(page.locator("#f-tenure-error")).to_be_hidden()


def test_a_csv_of_50_customers_is_scored_sorted_and_downloadable(page, server_url, dataset_path, raw_df, tmp_path):
    rows = raw_rows(dataset_path, 50)
    upload(page, write_rows(rows, tmp_path / "customers.csv"))
    expect(page.locator("#scores tbody tr")).to_have_count(50)
    expect(page.locator("#batch-summary")).to_contain_text("50 customers scored")

    status, answers = api(server_url, raw_df.head(50).to_dict(orient="records"))
    assert status == 200 and len(answers) == 50
    expected = {row["customerID"]: answer for row, answer in zip(rows, answers, strict=True)}
    status, explained = api(server_url, raw_df.head(50).to_dict(orient="records"), "/explain")
    assert status == 200
    reasons = {row["customerID"]: [r["text"] for r in a["reasons"]] for row, a in zip(rows, explained, strict=True)}
    shown = table_rows(page)
    probabilities = [float(p) for _, p, *_ in shown]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sorted(customer for customer, *_ in shown) == sorted(expected)
    for customer, probability, decision, churn, main_reason in shown:
        assert float(probability) == expected[customer]["churn_probability"]
        assert churn == json.dumps(expected[customer]["churn"])
        assert decision == ("yes" if expected[customer]["churn"] else "no")
        assert main_reason == reasons[customer][0]
    page.screenshot(path=tmp_path / "batch.png", full_page=True)

    with page.expect_download() as info:
        page.locator("#download").click()
    download = info.value
    assert download.suggested_filename == "customers-scored.csv"
    scored = tmp_path / "scored.csv"
    download.save_as(scored)
    with open(scored, newline="") as f:
        scored_rows = list(csv.DictReader(f))
    assert list(scored_rows[0]) == [*rows[0], "churn_probability", "churn", "reason_1", "reason_2", "reason_3"]
    for row, scored_row, answer in zip(rows, scored_rows, answers, strict=True):
        assert {k: scored_row[k] for k in row} == row
        assert float(scored_row["churn_probability"]) == answer["churn_probability"]
        assert scored_row["churn"] == json.dumps(answer["churn"])
        top_three = [scored_row[f"reason_{k}"] for k in (1, 2, 3)]
        assert top_three == reasons[row["customerID"]] + [""] * (3 - len(reasons[row["customerID"]]))
    assert sum(all(scored_row[f"reason_{k}"] for k in (1, 2, 3)) for scored_row in scored_rows) > 40


def test_the_csv_parser_reads_quoted_fields_and_blank_totals(page, server_url, dataset_path, tmp_path):
    with open(dataset_path, newline="") as f:
        reader = csv.DictReader(f)
        blank_total = next(row for row in reader if not row["TotalCharges"].strip())
    rows = [*raw_rows(dataset_path, 3), blank_total]
    rows[1]["customerID"] = 'ACME, "Inc"\nbranch 2'
    upload(page, write_rows(rows, tmp_path / "quoted.csv", quoting=csv.QUOTE_ALL, lineterminator="\r\n"))
    expect(page.locator("#scores tbody tr")).to_have_count(4)
    status, answers = api(server_url, [with_numbers(row) for row in rows])
    assert status == 200
    shown = {customer: float(probability) for customer, probability, *_ in table_rows(page)}
    assert shown == {row["customerID"]: answer["churn_probability"] for row, answer in zip(rows, answers, strict=True)}


def test_batch_errors_are_shown_with_their_row(page, server_url, dataset_path, tmp_path):
    rows = raw_rows(dataset_path, 3)
    rows[1]["Contract"] = "Forever"
    rows[2]["tenure"] = "-5"
    page.locator("#csv-file").set_input_files(write_rows(rows, tmp_path / "bad.csv"))
    # By keyboard: from the file control, Tab to the button and press Enter.
    page.locator("#csv-file").focus()
    page.keyboard.press("Tab")
    expect(page.locator("#upload-button")).to_be_focused()
    page.keyboard.press("Enter")
    errors = page.locator("#upload-error li")
    expect(errors).to_have_count(2)
    expect(errors.nth(0)).to_contain_text(f"Row 2 ({rows[1]['customerID']}): Contract:")
    expect(errors.nth(1)).to_contain_text(f"Row 3 ({rows[2]['customerID']}): tenure:")
    expect(page.locator("#batch-result")).to_be_hidden()
    page.screenshot(path=tmp_path / "batch-errors.png", full_page=True)


# ---- Numbers written as text: the schema's one rule (Feature.text_pattern) decides for the page, the API and
# score.py alike. Each case is one cell of the dataset's first customer; the first four are the issue's.
NUMBER_TEXTS = [
    ("tenure", "0x10"),
    ("tenure", " 1e1 "),
    ("tenure", "12"),
    ("MonthlyCharges", " 29.85 "),
    ("tenure", "+7"),
    ("tenure", "0012"),
    ("tenure", "12."),
    ("tenure", "12.0"),
    ("tenure", "12.5"),
    ("tenure", "1_0"),  # Python's float reads it; JavaScript's Number does not
    ("tenure", "\u0661\u0662"),  # Arabic-Indic 12: Python's float reads it
    ("tenure", "\u00a012"),  # a no-break space: both languages' number readers skip it
    ("tenure", "1201"),
    ("tenure", ""),
    ("SeniorCitizen", "1.0"),
    ("MonthlyCharges", ".5"),
    ("MonthlyCharges", "1e1"),
    ("MonthlyCharges", "Infinity"),
    ("MonthlyCharges", "-0"),
    ("TotalCharges", " "),
    ("TotalCharges", ""),
    ("TotalCharges", "0x1p3"),
]


def number_text_rows(dataset_path) -> list[dict]:
    base = raw_rows(dataset_path, 1)[0]
    return [{**base, "customerID": f"case-{i}", column: text} for i, (column, text) in enumerate(NUMBER_TEXTS)]


def page_refusals(page) -> set[str]:
    """The customerIDs of the rows the page's upload lists as refused."""
    expect(page.locator("#upload-error")).to_be_visible()
    return set(page.locator("#upload-error li[data-index]").evaluate_all("items => items.map(i => i.textContent)"))


def test_the_upload_refuses_exactly_the_number_texts_the_api_and_score_py_refuse(
    page, server_url, dataset_path, tmp_path
):
    rows = number_text_rows(dataset_path)
    upload(page, write_rows(rows, tmp_path / "numbers.csv"))
    listed = page_refusals(page)
    by_page = {row["customerID"] for row in rows if any(f"({row['customerID']})" in item for item in listed)}
    assert len(listed) == len(by_page)  # one error a refused row: the cell that was changed

    # The API, sent each row's text as the CSV holds it.
    answers = {row["customerID"]: api(server_url, row, "/explain") for row in rows}
    by_api = {customer for customer, (status, _) in answers.items() if status != 200}
    assert all(status in (200, 422) for status, _ in answers.values())

    # score.py, reading the same file.
    output = tmp_path / "numbers.scored.csv"
    run = subprocess.run(
        [sys.executable, "score.py", str(tmp_path / "numbers.csv"), "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    with open(output.with_name("numbers.scored.rejects.csv"), newline="") as f:
        by_score_py = {reject["customerID"] for reject in csv.DictReader(f)}

    assert by_page == by_api == by_score_py
    issue = {text: f"case-{i}" for i, (_, text) in enumerate(NUMBER_TEXTS[:4])}
    assert {issue["0x10"], issue[" 1e1 "]} <= by_page and not {issue["12"], issue[" 29.85 "]} & by_page

    # The rows all three accept are scored by the page as the API scores their text.
    accepted = [row for row in rows if row["customerID"] not in by_api]
    page.reload()
    upload(page, write_rows(accepted, tmp_path / "accepted.csv"))
    expect(page.locator("#scores tbody tr")).to_have_count(len(accepted))
    shown = {customer: float(probability) for customer, probability, *_ in table_rows(page)}
    assert shown == {row["customerID"]: answers[row["customerID"]][1]["churn_probability"] for row in accepted}


@pytest.mark.parametrize("tenure, accepted", [("1e1", False), ("12", True)])
def test_the_form_reads_numbers_by_the_same_rule(page, server_url, tenure, accepted):
    control(page, "tenure").fill(tenure)
    page.locator("#predict-button").click()
    status, answer = api(server_url, {**SAMPLE_CUSTOMER, "tenure": tenure}, "/explain")
    assert status == (200 if accepted else 422)
    if accepted:
        assert wait_for_result(page)[0] == answer["churn_probability"]
    else:
        expect(page.locator("#f-tenure-error")).to_contain_text(answer["detail"][0]["message"])


def test_a_blank_total_in_the_form_counts_as_0_as_its_hint_says(page, server_url):
    control(page, "totalcharges").fill("")
    page.locator("#predict-button").click()
    probability, _ = wait_for_result(page)
    status, answer = api(server_url, {**SAMPLE_CUSTOMER, "totalcharges": ""}, "/explain")
    assert status == 200 and probability == answer["churn_probability"]
    assert without_ids(answer) == without_ids(api(server_url, {**SAMPLE_CUSTOMER, "totalcharges": 0}, "/explain")[1])


# ---- The download: a cell a spreadsheet would run as a formula is written as text (OWASP's CSV injection advice)

FORMULA_IDS = ["=1+2", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A2)", "\t=1+2", "\r=1+2", '=HYPERLINK("http://x.test")']
PLAIN_IDS = ["7590-VHVEG", "-5", "+1.5", "2e3", " =1", "a=b"]


def test_the_download_neutralises_formulas_and_keeps_numbers(page, dataset_path, tmp_path):
    base = raw_rows(dataset_path, 1)[0]
    ids = FORMULA_IDS + PLAIN_IDS
    # An extra column whose name would be a formula, and one of signed numbers.
    rows = [{**base, "customerID": id_, "@note": "-1", "Balance": "-12.5"} for id_ in ids]
    rows[0].update({"@note": "=cmd", "Balance": "+3"})
    upload(page, write_rows(rows, tmp_path / "formulas.csv"))
    expect(page.locator("#scores tbody tr")).to_have_count(len(rows))
    # The table shows each id as it is: only the file a spreadsheet opens needs the guard.
    assert sorted(row[0] for row in table_rows(page)) == sorted(ids)

    with page.expect_download() as info:
        page.locator("#download").click()
    scored = tmp_path / "scored.csv"
    info.value.save_as(scored)
    with open(scored, newline="") as f:
        header, *lines = list(csv.reader(f))
    assert header[: len(base) + 2] == [*base, "'@note", "Balance"]
    assert [line[0] for line in lines] == [f"'{id_}" for id_ in FORMULA_IDS] + PLAIN_IDS
    note, balance = header.index("'@note"), header.index("Balance")
    assert [line[note] for line in lines] == ["'=cmd"] + ["-1"] * (len(rows) - 1)
    assert [line[balance] for line in lines] == ["+3"] + ["-12.5"] * (len(rows) - 1)
    # Everything else as uploaded, and the added columns as before.
    for row, line in zip(rows, lines, strict=True):
        assert line[1 : len(base)] == list(row.values())[1 : len(base)]
        assert 0 <= float(line[header.index("churn_probability")]) <= 1


def test_a_csv_with_uneven_rows_is_refused_before_sending(page, tmp_path):
    path = tmp_path / "uneven.csv"
    path.write_text("customerID,gender\nA,Female\nB\n")
    upload(page, path)
    expect(page.locator("#upload-error")).to_have_text("Row 2 has 1 fields; the header has 2.")


def test_the_page_reads_at_phone_width(phone_page, dataset_path, tmp_path):
    page = phone_page
    upload(page, write_rows(raw_rows(dataset_path, 50), tmp_path / "customers.csv"))
    expect(page.locator("#scores tbody tr")).to_have_count(50)
    page.locator("#predict-button").click()
    wait_for_result(page)
    # No sideways scrolling of the page: the table scrolls inside its own box.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # The controls take one column, each as wide as the form.
    widths = page.locator("#customer-form select, #customer-form input").evaluate_all(
        "els => els.map(e => e.getBoundingClientRect().width)"
    )
    assert min(widths) > PHONE["width"] * 0.7
    page.screenshot(path=tmp_path / "phone.png", full_page=True)


# ---- Why: the explanation chart


def chart(page):
    """(feature, contribution, side) of each bar of the chart, top to bottom."""
    return page.locator("#contributions li").evaluate_all(
        "rows => rows.map(r => [r.dataset.feature, Number(r.dataset.contribution), r.className])"
    )


def test_the_chart_shows_each_features_push_sorted_and_on_its_side(page, tmp_path):
    page.locator("#predict-button").click()
    wait_for_result(page)
    expected = make_explainer(load_served_model(MODEL_FILE)).explain_one(SAMPLE_CUSTOMER)
    toward_churn_first = sorted(expected["contributions"].items(), key=lambda item: -item[1])
    expect(page.locator("#contributions li")).to_have_count(len(FEATURES))
    assert chart(page) == [[name, c, "toward" if c > 0 else "away"] for name, c in toward_churn_first]
    # The largest push toward churn (a one-month tenure) is the longest bar, right of the axis; the last bar is the
    # largest push away from churn, left of it.
    bars = page.locator("#contributions .chart-bar")
    top, bottom = bars.first.bounding_box(), bars.last.bounding_box()
    axis = page.locator("#contributions .chart-track").first.bounding_box()
    centre = axis["x"] + axis["width"] / 2
    assert top["x"] == pytest.approx(centre, abs=1) and top["width"] == pytest.approx(axis["width"] / 2, abs=1)
    assert bottom["x"] + bottom["width"] == pytest.approx(centre, abs=1) and 0 < bottom["width"] < top["width"]
    colours = bars.evaluate_all("bars => bars.map(b => getComputedStyle(b).backgroundColor)")
    assert colours[0] != colours[-1]
    first = page.locator("#contributions li").first
    expect(first.locator(".chart-label")).to_have_text("tenure: 1")
    expect(first.locator(".chart-value")).to_have_text(f"+{toward_churn_first[0][1]:.2f}")
    expect(page.locator("#reasons li")).to_have_text([reason["text"] for reason in expected["reasons"]])
    page.screenshot(path=tmp_path / "chart.png", full_page=True)

    # Another customer redraws the chart; an error clears it, as it does the probability.
    control(page, "contract").select_option(label="Two year")
    page.locator("#predict-button").click()
    expect(page.locator("#contributions li[data-feature='contract']")).to_have_class("away")
    control(page, "tenure").fill("-1")
    page.locator("#predict-button").click()
    expect(page.locator("#explanation")).to_be_hidden()


# ---- API keys (CHURN_API_KEYS): the page asks for one and keeps it for the tab

API_KEY = "page-test-key-7Qx"


@pytest.fixture(scope="module")
def keyed_server_url(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("web-keys") / "server.log"
    with running_server(waitress_command(port), port, env={"CHURN_API_KEYS": API_KEY}, log_path=log) as (url, _):
        yield url


@pytest.fixture
def keyed_page(browser, keyed_server_url):
    yield from checked_page(browser, keyed_server_url)


def test_the_page_asks_for_a_key_and_keeps_it_for_the_tab(keyed_page, keyed_server_url, browser):
    page = keyed_page
    status, refusal = api(keyed_server_url, SAMPLE_CUSTOMER, "/explain")
    assert status == 401
    expect(page.locator("#key-section")).to_be_hidden()
    page.locator("#predict-button").click()
    expect(page.locator("#key-section")).to_be_visible()
    expect(page.locator("#key-message")).to_have_text(refusal["error"])
    expect(page.locator("#api-key")).to_be_focused()

    # A wrong key is refused and asked for again; it is not kept.
    page.locator("#api-key").fill("not-the-key")
    page.locator("#key-button").click()
    expect(page.locator("#key-message")).to_have_text("The API key is not valid")
    assert page.evaluate("sessionStorage.getItem('churn-api-key')") is None

    # The right key answers the pending request, sent as a bearer token.
    page.locator("#api-key").fill(API_KEY)
    with page.expect_request("**/explain") as sent:
        page.locator("#key-button").click()
    assert sent.value.headers["authorization"] == f"Bearer {API_KEY}"
    probability, _ = wait_for_result(page)
    answer = api(keyed_server_url, SAMPLE_CUSTOMER, Authorization=f"Bearer {API_KEY}")[1]
    assert probability == answer["churn_probability"]
    expect(page.locator("#key-section")).to_be_hidden()
    # Kept for this tab's session only: not in localStorage or a cookie, and still there after a reload.
    assert page.evaluate("sessionStorage.getItem('churn-api-key')") == API_KEY
    assert page.evaluate("localStorage.length") == 0 and page.context.cookies() == []
    page.reload()
    page.locator("#predict-button").click()
    wait_for_result(page)
    expect(page.locator("#key-section")).to_be_hidden()

    # Another browser session starts without it; cancelling shows the service's refusal as the form's error.
    other = open_page(browser, keyed_server_url)
    try:
        other.locator("#predict-button").click()
        expect(other.locator("#key-section")).to_be_visible()
        other.locator("#key-cancel").click()
        expect(other.locator("#key-section")).to_be_hidden()
        expect(other.locator("#form-error")).to_have_text(refusal["error"])
        assert other.problems == []
    finally:
        other.context.close()
