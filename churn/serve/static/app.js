"use strict";
// The page's behaviour: the form and the CSV upload both call POST /explain (the probability and why) and show
// what it answers.
(() => {
  const schema = JSON.parse(document.getElementById("schema").textContent);
  const explainUrl = document.body.dataset.explainUrl;
  // churn.model.data.clean_text: the dataset's spelling of a name to the model's, which the form's controls use.
  const modelName = (text) => text.toLowerCase().replaceAll(" ", "_");
  // churn.model.schema's one rule for a number written as text (Feature.text_pattern), by the model's name of the field.
  const numberPatterns = new Map(schema.filter((f) => f.numeric).map((f) => [f.name, new RegExp(f.text_pattern)]));
  const columnOf = Object.fromEntries(schema.map((f) => [f.name, f.column]));
  const percent = (p) => `${(p * 100).toFixed(1)} %`;

  // API key --------------------------------------------------------------------------------------------------------
  // When the service has keys (CHURN_API_KEYS) it answers 401: the page asks for one, keeps it for this tab only,
  // and sends it with every call.
  const KEY_STORAGE = "churn-api-key";
  const keySection = document.getElementById("key-section");
  const keyForm = document.getElementById("key-form");
  const keyInput = document.getElementById("api-key");
  const keyMessage = document.getElementById("key-message");
  let keyAnswer = null; // resolves the pending askForKey() with the key, or null when cancelled

  function askForKey(message) {
    keyMessage.textContent = message;
    keyInput.value = "";
    keySection.hidden = false;
    keyInput.focus();
    return new Promise((resolve) => {
      keyAnswer = resolve;
    });
  }

  function answerKey(key) {
    keySection.hidden = true;
    const resolve = keyAnswer;
    keyAnswer = null;
    if (resolve) resolve(key);
  }

  keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = keyInput.value.trim();
    if (!key) {
      keyMessage.textContent = "Enter the key, or Cancel.";
      keyInput.focus();
      return;
    }
    sessionStorage.setItem(KEY_STORAGE, key);
    answerKey(key);
  });
  document.getElementById("key-cancel").addEventListener("click", () => answerKey(null));

  async function readJson(response) {
    try {
      return await response.json();
    } catch {
      return { error: `The service answered HTTP ${response.status} without a JSON body` };
    }
  }

  async function explain(body) {
    for (;;) {
      const headers = { "Content-Type": "application/json", Accept: "application/json" };
      const key = sessionStorage.getItem(KEY_STORAGE);
      if (key) headers.Authorization = `Bearer ${key}`;
      const response = await fetch(explainUrl, { method: "POST", headers, body: JSON.stringify(body) });
      const data = await readJson(response);
      if (response.status !== 401) return { ok: response.ok, data };
      sessionStorage.removeItem(KEY_STORAGE); // refused: a stale key must not be sent again
      if ((await askForKey(data.error)) === null) return { ok: false, data };
    }
  }

  function describe(detail) {
    let text = detail.message;
    // A message usually states what is allowed itself (the categories, or the range): it is not said twice.
    if (detail.allowed) {
      if (!text.includes(detail.allowed[0])) text += ` (allowed: ${detail.allowed.join(", ")})`;
    } else if (detail.maximum != null && !text.includes(`from ${detail.minimum} to ${detail.maximum}`)) {
      text += ` (allowed: ${detail.minimum} to ${detail.maximum})`;
    }
    return text;
  }

  function byIds(...ids) {
    return ids.map((id) => document.getElementById(id));
  }

  function showError(box, text) {
    box.textContent = text;
    box.hidden = false;
  }

  // One customer ---------------------------------------------------------------------------------------------------
  const [form, formError, result, resultText, resultBar, explanation, reasonList, chart] = byIds(
    "customer-form", "form-error", "result", "result-text", "result-bar", "explanation", "reasons", "contributions"
  );
  const controls = [...form.querySelectorAll("input[name], select[name]")];

  function clearFormErrors() {
    for (const control of controls) control.removeAttribute("aria-invalid");
    for (const box of form.querySelectorAll(".field-error, #form-error")) {
      box.textContent = "";
      box.hidden = true;
    }
  }

  function customerFromForm() {
    const customer = {};
    for (const control of controls) {
      // What the browser could not read as a number at all is sent as null, so that the API names the field; the
      // rest as the CSV's cells are, by the schema's rule (a blank TotalCharges is 0, 1e1 is refused).
      const unreadable = control.type === "number" && control.validity.badInput;
      customer[control.name] = unreadable ? null : cell(control.name, control.value);
    }
    return customer;
  }

  function showResult(answer) {
    const p = answer.churn_probability;
    // The full value, as parsed from the API's JSON, for anyone (or any test) who needs more than the rounding.
    result.dataset.probability = String(p);
    result.dataset.churn = String(answer.churn);
    result.classList.toggle("churn", answer.churn);
    resultText.textContent = "";
    const strong = document.createElement("strong");
    strong.id = "probability";
    strong.textContent = percent(p);
    resultText.append("Churn probability ", strong, ": ");
    const decision = document.createElement("span");
    decision.id = "decision";
    decision.textContent = answer.churn ? "likely to churn" : "not likely to churn";
    resultText.append(decision);
    resultBar.style.width = `${p * 100}%`;
    showExplanation(answer);
  }

  // The value a control shows: a category's label (the dataset's spelling), or the number typed.
  function shownValue(name) {
    const control = form.elements.namedItem(name);
    return control.tagName === "SELECT" ? control.selectedOptions[0].textContent : control.value;
  }

  const signed = (x) => `${x > 0 ? "+" : x < 0 ? "\u2212" : ""}${Math.abs(x).toFixed(2)}`;

  // A horizontal bar per feature, largest push toward churn first: toward churn to the right of the axis, away
  // from it to the left, lengths relative to the largest. Plain elements and CSS, so no script or style comes
  // from anywhere else (the page's Content-Security-Policy allows none).
  function showExplanation(answer) {
    const reasons = answer.reasons.map((reason) => {
      const item = document.createElement("li");
      item.textContent = reason.text;
      return item;
    });
    if (!reasons.length) {
      const item = document.createElement("li");
      item.textContent = "Nothing pushes this customer toward churn more than the average customer.";
      reasons.push(item);
    }
    reasonList.replaceChildren(...reasons);

    const entries = Object.entries(answer.contributions).sort((a, b) => b[1] - a[1]);
    const largest = Math.max(...entries.map(([, c]) => Math.abs(c))) || 1;
    const rows = entries.map(([name, contribution]) => {
      const row = document.createElement("li");
      row.dataset.feature = name;
      row.dataset.contribution = String(contribution);
      row.className = contribution > 0 ? "toward" : "away";
      const label = document.createElement("span");
      label.className = "chart-label";
      label.textContent = `${columnOf[name]}: ${shownValue(name)}`;
      const track = document.createElement("span");
      track.className = "chart-track";
      const bar = document.createElement("span");
      bar.className = "chart-bar";
      bar.style.width = `${(Math.abs(contribution) / largest) * 50}%`;
      track.append(bar);
      const value = document.createElement("span");
      value.className = "chart-value";
      value.textContent = signed(contribution);
      row.append(label, track, value);
      return row;
    });
    chart.replaceChildren(...rows);
    explanation.hidden = false;
  }

  function clearResult() {
    delete result.dataset.probability;
    delete result.dataset.churn;
    result.classList.remove("churn");
    resultText.textContent = "No prediction: see the errors above.";
    resultBar.style.width = "0";
    explanation.hidden = true;
    chart.replaceChildren();
    reasonList.replaceChildren();
  }

  function showFieldErrors(data) {
    const unplaced = [];
    let first = null;
    for (const detail of data.detail || []) {
      const control = detail.field ? form.elements.namedItem(modelName(detail.field)) : null;
      if (!control) {
        unplaced.push(detail.field ? `${detail.field}: ${describe(detail)}` : describe(detail));
        continue;
      }
      const box = document.getElementById(`${control.id}-error`);
      showError(box, box.textContent ? `${box.textContent} ${describe(detail)}` : describe(detail));
      control.setAttribute("aria-invalid", "true");
      first ??= control;
    }
    if (unplaced.length || !first) showError(formError, [data.error, ...unplaced].join(" "));
    (first || formError).focus();
  }

  // While a request is out a second submit is ignored; the button is not disabled, which would take the
  // keyboard's focus away from it.
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (form.getAttribute("aria-busy")) return;
    clearFormErrors();
    form.setAttribute("aria-busy", "true");
    try {
      const { ok, data } = await explain(customerFromForm());
      if (ok) {
        showResult(data);
      } else {
        clearResult();
        showFieldErrors(data);
      }
    } catch (error) {
      clearResult();
      showError(formError, `The service could not be reached: ${error.message}`);
    } finally {
      form.removeAttribute("aria-busy");
    }
  });

  // A file of customers --------------------------------------------------------------------------------------------
  const [uploadForm, fileInput, uploadError, batchResult, batchSummary, download] = byIds(
    "upload-form", "csv-file", "upload-error", "batch-result", "batch-summary", "download"
  );
  const tbody = document.querySelector("#scores tbody");

  // RFC 4180: fields separated by commas, optionally quoted, "" for a quote inside quotes, CRLF or LF line ends.
  function parseCsv(text) {
    const rows = [];
    let row = [];
    let field = "";
    let quoted = false;
    let i = text.charCodeAt(0) === 0xfeff ? 1 : 0; // a byte order mark, as spreadsheets write
    for (; i < text.length; i++) {
      const c = text[i];
      if (quoted) {
        if (c !== '"') field += c;
        else if (text[i + 1] === '"') field += text[i++];
        else quoted = false;
      } else if (c === '"') {
        quoted = true;
      } else if (c === ",") {
        row.push(field);
        field = "";
      } else if (c === "\n" || c === "\r") {
        if (c === "\r" && text[i + 1] === "\n") i++;
        row.push(field);
        rows.push(row);
        row = [];
        field = "";
      } else {
        field += c;
      }
    }
    if (quoted) throw new Error("the file ends inside a quoted field");
    if (field !== "" || row.length) {
      row.push(field);
      rows.push(row);
    }
    return rows.filter((r) => r.length > 1 || r[0] !== ""); // blank lines
  }

  // A text cell a spreadsheet would read as a formula (OWASP's CSV injection: =, +, -, @, tab or CR first) gets a
  // leading ' so that it is shown as the text it is; a number (-5, +1.5e3) cannot be a formula and stays a number.
  const FORMULA_START = /^[=+\-@\t\r]/;
  const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
  const inert = (value) => (FORMULA_START.test(value) && !NUMBER.test(value) ? `'${value}` : value);
  const csvField = (value) => (/[",\r\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value);
  const csvLine = (fields) => fields.map((value) => csvField(inert(value))).join(",");

  // A number's text (under any spelling of its column the API accepts) that the schema's rule reads goes as the JSON
  // number it spells, which the API takes exactly as it would the text; anything else goes as written, a blank
  // TotalCharges included, for the API to read or refuse in its own words: the page, the API and score.py decide
  // alike, and the API's fast path still gets numbers.
  function cell(column, value) {
    const pattern = numberPatterns.get(modelName(column));
    return pattern && pattern.test(value) ? Number(value) : value;
  }

  function showBatchErrors(data, ids) {
    const details = data.detail || [];
    uploadError.textContent = "";
    const heading = document.createElement("p");
    heading.textContent = data.error;
    const list = document.createElement("ul");
    for (const detail of details.slice(0, 20)) {
      const item = document.createElement("li");
      const id = ids[detail.index];
      const where = detail.index === undefined ? "" : `Row ${detail.index + 1}${id ? ` (${id})` : ""}: `;
      item.textContent = `${where}${detail.field ? `${detail.field}: ` : ""}${describe(detail)}`;
      if (detail.index !== undefined) item.dataset.index = detail.index;
      list.append(item);
    }
    if (details.length > 20) {
      const more = document.createElement("li");
      more.textContent = `and ${details.length - 20} more`;
      list.append(more);
    }
    uploadError.append(heading, list);
    uploadError.hidden = false;
  }

  function showTable(header, records, ids, answers, fileName) {
    const risk = (i) => answers[i].churn_probability;
    const order = answers.map((_, i) => i).sort((a, b) => risk(b) - risk(a) || a - b);
    const rows = document.createDocumentFragment();
    for (const i of order) {
      const { churn_probability: p, churn } = answers[i];
      const tr = document.createElement("tr");
      tr.dataset.row = i;
      tr.dataset.probability = String(p);
      tr.dataset.churn = String(churn);
      if (churn) tr.className = "churn";
      const mainReason = answers[i].reasons.length ? answers[i].reasons[0].text : "";
      for (const text of [ids[i], percent(p), churn ? "yes" : "no", mainReason]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      rows.append(tr);
    }
    tbody.replaceChildren(rows);

    const reasonColumns = ["reason_1", "reason_2", "reason_3"];
    const lines = [csvLine([...header, "churn_probability", "churn", ...reasonColumns])];
    records.forEach((record, i) => {
      const reasons = reasonColumns.map((_, k) => answers[i].reasons[k]?.text ?? "");
      lines.push(csvLine([...record, String(risk(i)), String(answers[i].churn), ...reasons]));
    });
    if (download.href.startsWith("blob:")) URL.revokeObjectURL(download.href);
    download.href = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
    download.download = `${fileName.replace(/\.csv$/i, "")}-scored.csv`;

    const churners = answers.filter((a) => a.churn).length;
    batchSummary.textContent = `${answers.length} customers scored; ${churners} likely to churn.`;
    batchResult.hidden = false;
  }

  uploadForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (uploadForm.getAttribute("aria-busy")) return;
    uploadError.hidden = true;
    batchSummary.textContent = "";
    batchResult.hidden = true;
    const file = fileInput.files[0];
    const fail = (text) => {
      showError(uploadError, text);
      fileInput.focus();
    };
    if (!file) return fail("Choose a CSV file first.");
    uploadForm.setAttribute("aria-busy", "true");
    try {
      let rows;
      try {
        rows = parseCsv(await file.text());
      } catch (error) {
        return fail(`The file is not valid CSV: ${error.message}.`);
      }
      const [header, ...records] = rows;
      if (!records.length) return fail("The file has no customer rows under its header.");
      const uneven = records.findIndex((r) => r.length !== header.length);
      if (uneven >= 0) {
        return fail(`Row ${uneven + 1} has ${records[uneven].length} fields; the header has ${header.length}.`);
      }
      const idColumn = header.indexOf("customerID");
      const ids = records.map((r, i) => (idColumn >= 0 ? r[idColumn] : `row ${i + 1}`));
      const customers = records.map((r) => Object.fromEntries(header.map((column, j) => [column, cell(column, r[j])])));
      const { ok, data } = await explain(customers);
      if (!ok) {
        showBatchErrors(data, ids);
        fileInput.focus();
        return;
      }
      showTable(header, records, ids, data, file.name);
    } catch (error) {
      fail(`The service could not be reached: ${error.message}`);
    } finally {
      uploadForm.removeAttribute("aria-busy");
    }
  });
})();
