// Imports: a CSV or JSON Lines file of invoices, payments or memos read in the browser and sent
// through the bulk mutations, as `partnerbill import` sends it: batches of up to 1,000 rows, a
// few calls in flight, REJECT_FAILED_ROWS, a dry run, transient failures sent again with
// backoff, and the refused rows offered back as a file in the input's format.

import { ApiError, features, gql } from "../api.js";
import { announce, errorPanel, h, replace, tableRegion } from "../dom.js";
import { controlOf, field, fieldset, valueOf } from "../forms.js";
import { CSV_COLUMNS, ImportFileError, KINDS, bulkDocument, errorText, failedFile, failedName, readRows } from "../importfile.js";

const MAX_BATCH = 1000;
const ATTEMPTS = 8;
// Codes (of a row or of the whole call) that may pass when the same call is sent again.
const RETRY_CODES = new Set(["UNAVAILABLE", "RATE_LIMITED", "LOCK_COMPETITION"]);
// Call-level codes that say nothing about the rows: the import cannot go on.
const ABORT_CODES = new Set(["QUERY_TOO_COMPLEX", "LIMIT_EXCEEDED", "UNAUTHENTICATED"]);
const SHOWN_FAILURES = 100;

class ImportAborted extends Error {}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

// Exponential, with jitter so parallel calls do not come back together.
function backoff(attempt) {
  return sleep(Math.min(30_000, 500 * 2 ** attempt) * (0.5 + Math.random()));
}

// One call: { results } | { refused: message } | { again: true }; throws ImportAborted.
async function post(kind, rows, dryRun) {
  try {
    const data = await gql(bulkDocument(kind), { rows: rows.map((r) => r.input), dryRun });
    return { results: data[KINDS[kind].mutation].results };
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    if (e.status === 401 || e.status === 403) throw new ImportAborted(`The service refused the API key: ${e.message}`);
    if (e.status === 0 || e.status === 429 || e.status >= 500) return { again: true };
    const codes = new Set(e.errors.map((x) => x.extensions?.code).filter(Boolean));
    if ([...codes].some((c) => RETRY_CODES.has(c))) return { again: true };
    if ([...codes].some((c) => ABORT_CODES.has(c))) throw new ImportAborted(e.message);
    return { refused: e.message };
  }
}

// Each row's result. Rows that failed for a transient reason are sent again (their keys make
// that safe). A call refused as a whole (a value GraphQL cannot read in one row, such as the
// date 2026-11-31) is split in halves until the rows at fault stand alone.
async function send(kind, rows, dryRun) {
  const done = new Array(rows.length);
  let todo = rows.map((_, i) => i);
  for (let attempt = 0; attempt < ATTEMPTS && todo.length; attempt += 1) {
    if (attempt) await backoff(attempt - 1);
    const answer = await post(kind, todo.map((i) => rows[i]), dryRun);
    if (answer.refused !== undefined) {
      if (todo.length === 1) {
        done[todo[0]] = { errors: [{ code: "VALIDATION", field: null, retryable: false, message: answer.refused }] };
      } else {
        const half = Math.floor(todo.length / 2);
        for (const part of [todo.slice(0, half), todo.slice(half)]) {
          const results = await send(kind, part.map((i) => rows[i]), dryRun);
          part.forEach((i, j) => { done[i] = results[j]; });
        }
      }
      todo = [];
    } else if (answer.results) {
      const again = [];
      todo.forEach((i, j) => {
        const result = answer.results[j];
        if (result.errors.some((e) => RETRY_CODES.has(e.code)) && attempt + 1 < ATTEMPTS) again.push(i);
        else done[i] = result;
      });
      todo = again;
    }
  }
  for (const i of todo) {
    done[i] = { errors: [{ code: "UNAVAILABLE", field: null, retryable: true, message: "not sent: the service did not answer" }] };
  }
  return done;
}

function formatRate(rowsPerSecond) {
  return rowsPerSecond >= 10 ? Math.round(rowsPerSecond).toLocaleString("en") : rowsPerSecond.toFixed(1);
}

export async function importsPage(main) {
  const feats = await features();
  main.append(h("h1", { tabindex: "-1" }, "Imports"));
  if (!feats.mutation.has("createStandaloneInvoices")) {
    main.append(errorPanel("This server has no bulk mutations (createStandaloneInvoices, createPayments, ...): nothing to import with."));
    return undefined;
  }
  const canDryRun = feats.bulkInput.has("dryRun");

  const kindOptions = Object.entries(KINDS).map(([value, k]) => [value, k.label]);
  const columnsHint = h("p", { class: "hint", id: "import-columns" });
  const form = h("form", { class: "import-form", novalidate: true },
    fieldset("File",
      field({ label: "Kind of rows", path: "kind", options: kindOptions, value: "invoices" }),
      field({ label: "File (CSV or JSON Lines)", path: "file", type: "file",
              attrs: { accept: ".csv,.jsonl,.ndjson,text/csv,application/jsonl" },
              hint: "A failed-rows file from an earlier import is taken back as it is." }),
      field({ label: "Rows per call", path: "batch", type: "number", value: String(MAX_BATCH),
              attrs: { min: "1", max: String(MAX_BATCH), inputmode: "numeric" } }),
      field({ label: "Calls in flight", path: "concurrency", type: "number", value: "4",
              attrs: { min: "1", max: "8", inputmode: "numeric" } })),
    columnsHint,
    h("div", { class: "actions" },
      canDryRun ? h("button", { type: "submit", class: "secondary", value: "dry" }, "Dry run") : null,
      h("button", { type: "submit", value: "import" }, "Import"),
      h("button", { type: "button", class: "danger", hidden: true }, "Stop")));
  const stopButton = form.querySelector("button.danger");
  const showColumns = () => {
    const kind = valueOf(form, "kind");
    columnsHint.textContent = `CSV columns for ${KINDS[kind].label.toLowerCase()}: ${CSV_COLUMNS[kind].join(", ")}. `
      + "JSON Lines: the mutation's input object per line. Rows without an idempotencyKey get one derived "
      + "from the file's name, the row's number and its content, so the same file sent again writes nothing twice.";
  };
  controlOf(form, "kind").addEventListener("change", showColumns);
  showColumns();

  const progress = h("progress", { id: "import-progress", max: "1", value: "0" });
  const progressText = h("p", { class: "muted", role: "status", "aria-live": "polite", "data-fact": "import-progress" });
  const progressCard = h("section", { class: "card", "aria-labelledby": "import-progress-h", hidden: true },
    h("h2", { id: "import-progress-h" }, "Progress"),
    h("label", { for: "import-progress", class: "visually-hidden" }, "Rows sent"), progress, progressText);
  const result = h("div");

  let stopped = false;
  const downloads = []; // object URLs of failed-rows files, released when the view goes
  stopButton.addEventListener("click", () => {
    stopped = true;
    stopButton.disabled = true;
    progressText.textContent = `${progressText.textContent} Stopping after the calls in flight…`;
  });

  let running = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (running) return;
    const dryRun = event.submitter?.value === "dry";
    const kind = valueOf(form, "kind");
    const file = controlOf(form, "file").files[0];
    replace(result);
    if (!file) {
      replace(result, errorPanel("Choose a file first."));
      return;
    }
    const batchSize = Math.min(MAX_BATCH, Math.max(1, Number(valueOf(form, "batch")) || MAX_BATCH));
    const concurrency = Math.min(8, Math.max(1, Number(valueOf(form, "concurrency")) || 4));
    let parsed;
    try {
      parsed = await readRows(kind, file.name, await file.text());
    } catch (e) {
      replace(result, errorPanel(e instanceof ImportFileError ? `The file cannot be read: ${e.message}` : String(e.message || e)));
      return;
    }
    const { format, rows } = parsed;

    running = true;
    stopped = false;
    for (const b of form.querySelectorAll('button[type="submit"]')) b.disabled = true;
    stopButton.hidden = false;
    stopButton.disabled = false;
    progressCard.hidden = false;
    const verb = dryRun ? "Checked" : "Sent";
    const started = performance.now();
    let sent = 0;
    let written = 0;
    const failures = [];
    const update = () => {
      const seconds = Math.max(0.001, (performance.now() - started) / 1000);
      progress.max = Math.max(1, rows.length);
      progress.value = sent;
      progressText.textContent = `${verb} ${sent.toLocaleString("en")} of ${rows.length.toLocaleString("en")} rows · `
        + `${formatRate(sent / seconds)} rows/s · ${failures.length.toLocaleString("en")} failed`;
    };
    update();

    const batches = [];
    for (let i = 0; i < rows.length; i += batchSize) batches.push(rows.slice(i, i + batchSize));
    let next = 0;
    let aborted = null;
    const worker = async () => {
      while (next < batches.length && !stopped && !aborted) {
        const batch = batches[next];
        next += 1;
        try {
          const results = await send(kind, batch, dryRun);
          results.forEach((r, i) => {
            if (r.errors.length) failures.push({ row: batch[i], errors: r.errors });
            else written += 1;
          });
          sent += batch.length;
          update();
        } catch (e) {
          aborted = e;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, batches.length) }, worker));

    running = false;
    for (const b of form.querySelectorAll('button[type="submit"]')) b.disabled = false;
    stopButton.hidden = true;
    failures.sort((a, b) => a.row.number - b.row.number);
    showResult({ kind, format, fileName: file.name, dryRun, total: rows.length, sent, written, failures, aborted, stopped });
  });

  function showResult({ kind, format, fileName, dryRun, total, sent, written, failures, aborted, stopped: wasStopped }) {
    const what = KINDS[kind].label.toLowerCase();
    let summary;
    if (dryRun) {
      summary = `Dry run: ${written} of ${total} ${what} would be written, ${failures.length} refused. Nothing was written.`;
    } else {
      summary = `Import: ${written} of ${total} ${what} written (or already written by an earlier run of this file), `
        + `${failures.length} refused.`;
    }
    const notes = [];
    if (aborted) notes.push(errorPanel(`The import stopped: ${aborted.message || aborted}`));
    if (wasStopped || aborted) {
      notes.push(h("p", {}, `${total - sent} rows were not sent. Run the same file again to finish: rows already written are answered from their keys.`));
    }
    let download = null;
    if (failures.length) {
      const name = failedName(fileName);
      const type = format === "csv" ? "text/csv" : "application/jsonl";
      const url = URL.createObjectURL(new Blob([failedFile(kind, format, failures)], { type }));
      downloads.push(url);
      download = h("p", {}, h("a", { class: "button secondary", href: url, download: name }, `Download failed rows (${name})`),
        " Correct them in the file and import it here again: its rows keep their numbers and keys.");
    }
    const shown = failures.slice(0, SHOWN_FAILURES);
    replace(result, h("section", { class: "card", "aria-labelledby": "import-result-h" },
      h("h2", { id: "import-result-h" }, dryRun ? "Dry run result" : "Import result"),
      h("p", { "data-fact": "import-summary" }, summary),
      notes, download,
      failures.length
        ? tableRegion("Refused rows", h("table", {},
          h("caption", {}, failures.length > shown.length ? `Refused rows (the first ${shown.length} of ${failures.length})` : "Refused rows"),
          h("thead", {}, h("tr", {}, h("th", { scope: "col", class: "num" }, "Row"), h("th", { scope: "col" }, "Account"), h("th", { scope: "col" }, "Errors"))),
          h("tbody", {}, shown.map(({ row, errors }) => h("tr", { dataset: { row: String(row.number) } },
            h("th", { scope: "row", class: "num" }, String(row.number)),
            h("td", {}, row.input.accountNumber || ""),
            h("td", { class: "wrap" }, errorText(errors)))))))
        : null));
    announce(summary);
  }

  main.append(
    h("p", { class: "muted" }, "Invoices, payments and memos from a CSV or JSON Lines file, through the bulk mutations, as ",
      h("code", {}, "partnerbill import"), " sends them. Check a file with a dry run first: every row is checked and answered, nothing is written."),
    h("section", { class: "card", "aria-labelledby": "import-file-h" }, h("h2", { id: "import-file-h" }, "Import a file"), form),
    progressCard,
    result);
  return () => {
    stopped = true;
    for (const url of downloads) URL.revokeObjectURL(url);
  };
}
