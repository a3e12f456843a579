// Bill runs: create one, watch it live (billRunProgress), post or cancel it.

import { ApiError, gql, subscribe } from "../api.js";
import { announce, errorPanel, h, instant, replace, tableRegion } from "../dom.js";
import { clearErrors, errorSummary, field, fieldset, showErrors, valueOf } from "../forms.js";

const RUN = `billRunNumber status targetDate invoiceDate autoPost accountsTotal accountsProcessed
  invoicesGenerated createdAt completedAt posting postingStartedAt errors { accountNumber code message }`;
const RECENT_STORE = "partnerbill.console.recentBillRuns";

// The API lists no bill runs, so the console remembers the ones made or opened here.
function recentRuns() {
  try {
    return JSON.parse(localStorage.getItem(RECENT_STORE) || "[]");
  } catch {
    return [];
  }
}

function remember(run) {
  const runs = recentRuns().filter((r) => r.billRunNumber !== run.billRunNumber);
  runs.unshift({ billRunNumber: run.billRunNumber, targetDate: run.targetDate, status: run.status });
  localStorage.setItem(RECENT_STORE, JSON.stringify(runs.slice(0, 20)));
}

function monthEnd() {
  const now = new Date();
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 0)).toISOString().slice(0, 10);
}

export async function billRunsPage(main, params, query) {
  const summary = errorSummary();
  const submit = h("button", { type: "submit" }, "Create bill run");
  const form = h("form", { class: "billrun-form", novalidate: true },
    summary,
    fieldset("What to bill",
      field({ label: "Target date", path: "targetDate", type: "date", required: true, value: query.get("target") || monthEnd(),
              hint: "Charges due by this date are billed." }),
      field({ label: "Invoice date", path: "invoiceDate", type: "date", hint: "Defaults to the target date." }),
      field({ label: "Account numbers", path: "accountNumbers", value: query.get("accounts") || "",
              hint: "Invoice-owner accounts, separated by commas or spaces; empty for all." }),
      field({ label: "Batch", path: "batch", hint: "Only accounts of this batch." }),
      field({ label: "Bill cycle day", path: "billCycleDay", type: "number", attrs: { min: "1", max: "31", inputmode: "numeric" },
              hint: "Only accounts with this bill cycle day." }),
      field({ label: "Post the invoices when the run completes", path: "autoPost", type: "checkbox", value: false }),
      field({ label: "Idempotency key", path: "idempotencyKey", hint: "Optional: makes a repeated request safe." })),
    h("div", { class: "actions" }, submit));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form, summary);
    const input = { targetDate: valueOf(form, "targetDate"), autoPost: valueOf(form, "autoPost") };
    const invoiceDate = valueOf(form, "invoiceDate");
    if (invoiceDate) input.invoiceDate = invoiceDate;
    const numbers = valueOf(form, "accountNumbers").split(/[\s,]+/).filter(Boolean);
    if (numbers.length) input.accountNumbers = numbers;
    const batch = valueOf(form, "batch");
    if (batch) input.batch = batch;
    const day = valueOf(form, "billCycleDay");
    if (day) input.billCycleDay = Number(day);
    const key = valueOf(form, "idempotencyKey");
    if (key) input.idempotencyKey = key;
    submit.disabled = true;
    try {
      const data = await gql(`mutation ConsoleCreateBillRun($input: CreateBillRunInput!) {
          createBillRun(input: $input) { billRun { ${RUN} } errors { __typename code message field } } }`, { input });
      const payload = data.createBillRun;
      if (!payload.billRun) {
        showErrors(form, summary, payload.errors);
        return;
      }
      remember(payload.billRun);
      announce(`Bill run ${payload.billRun.billRunNumber} created.`);
      window.location.hash = `#/billruns/${encodeURIComponent(payload.billRun.billRunNumber)}`;
    } catch (e) {
      showErrors(form, summary, e instanceof ApiError && e.errors.length ? e.errors : [{ message: String(e.message || e) }]);
    } finally {
      submit.disabled = false;
    }
  });

  const open = h("form", { class: "inline-form", role: "search", "aria-label": "Open a bill run" },
    field({ label: "Bill run number", path: "billRunNumber", attrs: { placeholder: "BR00000001" } }),
    h("button", { type: "submit", class: "secondary" }, "Open"));
  open.addEventListener("submit", (event) => {
    event.preventDefault();
    const n = valueOf(open, "billRunNumber");
    if (n) window.location.hash = `#/billruns/${encodeURIComponent(n)}`;
  });

  const recent = recentRuns();
  main.append(
    h("h1", { tabindex: "-1" }, "Bill runs"),
    h("section", { class: "card", "aria-labelledby": "new-run-h" }, h("h2", { id: "new-run-h" }, "New bill run"), form),
    h("section", { class: "card", "aria-labelledby": "open-run-h" }, h("h2", { id: "open-run-h" }, "Open a bill run"), open,
      recent.length
        ? tableRegion("Bill runs opened in this browser", h("table", {},
          h("caption", {}, "Opened in this browser"),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Bill run"), h("th", { scope: "col" }, "Target date"), h("th", { scope: "col" }, "Status when last seen"))),
          h("tbody", {}, recent.map((r) => h("tr", {},
            h("th", { scope: "row" }, h("a", { href: `#/billruns/${encodeURIComponent(r.billRunNumber)}` }, r.billRunNumber)),
            h("td", {}, r.targetDate), h("td", {}, r.status))))))
        : h("p", { class: "muted" }, "Bill runs you create or open here are listed for you to come back to.")));
  return undefined;
}

export async function billRunPage(main, [number]) {
  const data = await gql(`query ConsoleBillRun($n: String!) { billRun(billRunNumber: $n) { ${RUN} } }`, { n: number });
  if (!data.billRun) {
    main.append(h("h1", { tabindex: "-1" }, "Bill run not found"), h("p", {}, `No bill run ${number}. `, h("a", { href: "#/billruns" }, "Back to bill runs")));
    return undefined;
  }
  let run = data.billRun;
  remember(run);
  document.title = `${run.billRunNumber} · partnerbill console`;

  const view = h("div");
  const note = h("p", { class: "muted update-note", role: "status", "aria-live": "polite" });
  const actionError = h("div");
  const postButton = h("button", { type: "button" }, "Post invoices");
  const cancelButton = h("button", { type: "button", class: "danger" }, "Cancel bill run");

  const settled = () => ["POSTED", "CANCELED"].includes(run.status)
    || (!run.posting && (run.status === "ERROR" || (run.status === "COMPLETED" && !run.autoPost)));
  const statusText = () => {
    if (run.posting) return `${run.status}: ${run.posting === "POST" ? "posting" : "canceling"} its invoices`;
    if (run.status === "COMPLETED" && !run.autoPost) return "COMPLETED: its invoices are drafts, waiting to be posted or canceled";
    return run.status;
  };

  function render() {
    const done = run.accountsTotal ? run.accountsProcessed / run.accountsTotal : 0;
    replace(view,
      h("dl", { class: "facts" },
        h("dt", {}, "Status"), h("dd", { "data-fact": "status" }, h("strong", {}, statusText())),
        h("dt", {}, "Target date"), h("dd", {}, run.targetDate),
        h("dt", {}, "Invoice date"), h("dd", {}, run.invoiceDate),
        h("dt", {}, "Posts when complete"), h("dd", {}, run.autoPost ? "yes" : "no"),
        h("dt", {}, "Accounts"), h("dd", { "data-fact": "accounts" }, `${run.accountsProcessed} of ${run.accountsTotal} processed`),
        h("dt", {}, "Invoices generated"), h("dd", { "data-fact": "invoices" }, String(run.invoicesGenerated)),
        h("dt", {}, "Created"), h("dd", {}, instant(run.createdAt)),
        h("dt", {}, "Completed"), h("dd", {}, run.completedAt ? instant(run.completedAt) : "not yet")),
      h("label", { for: "run-progress" }, "Progress"),
      h("progress", { id: "run-progress", max: "100", value: String(Math.round(done * 100)) }, `${Math.round(done * 100)}%`),
      run.errors.length
        ? tableRegion("Accounts that failed", h("table", {},
          h("caption", {}, "Accounts that failed"),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Account"), h("th", { scope: "col" }, "Code"), h("th", { scope: "col" }, "Message"))),
          h("tbody", {}, run.errors.map((e) => h("tr", {}, h("th", { scope: "row" }, e.accountNumber), h("td", {}, e.code), h("td", {}, e.message))))))
        : null);
    const canAct = !run.posting && ["COMPLETED", "ERROR"].includes(run.status);
    postButton.disabled = !(canAct && run.status === "COMPLETED");
    cancelButton.disabled = !canAct;
  }

  // The subscription completes when the run settles; a post or cancel starts a new one.
  let stop = () => {};
  function watch() {
    stop();
    stop = subscribe(`subscription ConsoleBillRunProgress($n: String!) { billRunProgress(billRunNumber: $n) { ${RUN} } }`,
      { n: run.billRunNumber }, {
        next: (event) => {
          run = event.billRunProgress;
          remember(run);
          render();
        },
        complete: () => {
          const text = `Bill run ${run.billRunNumber}: ${statusText()}.`;
          note.textContent = settled() ? `Settled. ${text}` : text;
          announce(text);
        },
        error: (errors) => {
          note.textContent = `Live progress stopped: ${errors.map((e) => e.message).join("; ")}`;
        },
      });
    note.textContent = "Watching live…";
  }

  async function act(mutation, label) {
    replace(actionError);
    postButton.disabled = true;
    cancelButton.disabled = true;
    try {
      const res = await gql(`mutation ConsoleBillRunAction($n: String!) { ${mutation}(input: {billRunNumber: $n}) {
          billRun { ${RUN} } errors { code message } } }`, { n: run.billRunNumber });
      const payload = res[mutation];
      if (payload.errors.length) replace(actionError, errorPanel(`${label} refused: ${payload.errors.map((e) => e.message).join("; ")}`));
      if (payload.billRun) run = payload.billRun;
      render();
      watch();
    } catch (e) {
      replace(actionError, errorPanel(`${label} failed: ${e.message || e}`));
      render();
    }
  }
  postButton.addEventListener("click", () => act("postBillRun", "Post"));
  cancelButton.addEventListener("click", () => act("cancelBillRun", "Cancel"));

  render();
  main.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/billruns" }, "Bill runs"), " / ", run.billRunNumber),
    h("h1", { tabindex: "-1" }, `Bill run ${run.billRunNumber}`),
    h("section", { class: "card", "aria-labelledby": "run-h" }, h("h2", { id: "run-h", class: "visually-hidden" }, "Progress"),
      view, note, actionError,
      h("div", { class: "actions" }, postButton, cancelButton),
      h("p", { class: "hint" }, "Posting makes the drafts due and moves the accounts' balances; canceling discards them so the charges can be billed again.")));
  watch();
  return () => stop();
}
