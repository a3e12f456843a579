// Reconciliation of the whole tenant, as `partnerbill reconcile` does it: every account through
// Query.metricsReconciliation a page at a time (each page one snapshot on the service's side),
// a progress bar, and each account whose live metrics differ from its documents with the
// metrics that differ.

import { ApiError, features, gql } from "../api.js";
import { announce, errorPanel, h, replace, tableRegion } from "../dom.js";
import { field, valueOf } from "../forms.js";

const METRICS = [
  ["balance", "Balance"],
  ["totalInvoiceBalance", "Total invoice balance"],
  ["totalDebitMemoBalance", "Total debit memo balance"],
  ["unappliedPaymentAmount", "Unapplied payments"],
  ["unappliedCreditMemoAmount", "Unapplied credit memos"],
  ["creditBalance", "Credit balance"],
  ["contractedMrr", "Contracted MRR"],
  ["lastInvoiceDate", "Last invoice date"],
];
const VALUES = METRICS.map(([m]) => m).join(" ");
const PAGE_SIZE = 100;

const QUERY = `query ConsoleReconcileAll($first: Int!, $after: String, $filter: AccountFilter) {
  metricsReconciliation(first: $first, after: $after, filter: $filter) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { node {
      account { accountNumber name partnerAccount pendingMetricChanges }
      live { ${VALUES} } recomputed { ${VALUES} } matches } } } }`;

// Equal as values: "45.0000" is "45.00"; dates and absent values compare as text.
function decimalText(value) {
  if (typeof value !== "string" || !/^-?\d+(\.\d+)?$/.test(value)) return null;
  let [whole, fraction = ""] = value.replace(/^-/, "").split(".");
  whole = whole.replace(/^0+(?=\d)/, "");
  fraction = fraction.replace(/0+$/, "");
  const text = fraction ? `${whole}.${fraction}` : whole;
  return value.startsWith("-") && text !== "0" ? `-${text}` : text;
}

function same(a, b) {
  if (a === b) return true;
  const x = decimalText(a);
  return x !== null && x === decimalText(b);
}

function csvValue(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

// The same report as `partnerbill reconcile --report`: one line per differing metric.
function report(mismatches) {
  const lines = [["accountNumber", "partnerAccount", "pendingMetricChanges", "metric", "live", "recomputed"]];
  for (const m of mismatches) {
    for (const d of m.differences) {
      lines.push([m.account.accountNumber, m.account.partnerAccount ? "True" : "False", m.account.pendingMetricChanges, d.metric, d.live, d.recomputed]);
    }
  }
  return `${lines.map((l) => l.map(csvValue).join(",")).join("\n")}\n`;
}

export async function reconcilePage(main) {
  const feats = await features();
  main.append(h("h1", { tabindex: "-1" }, "Reconciliation"));
  if (!feats.query.has("metricsReconciliation")) {
    main.append(errorPanel("This server does not reconcile metrics (it has no Query.metricsReconciliation)."));
    return undefined;
  }

  const form = h("form", { class: "inline-form", "aria-label": "Reconcile the tenant" },
    field({ label: "Partner accounts only", path: "partnerOnly", type: "checkbox", value: false }),
    h("button", { type: "submit" }, "Reconcile all accounts"),
    h("button", { type: "button", class: "danger", hidden: true }, "Stop"));
  const stopButton = form.querySelector("button.danger");
  const startButton = form.querySelector('button[type="submit"]');
  const progress = h("progress", { id: "reconcile-progress", max: "1", value: "0" });
  const progressText = h("p", { class: "muted", role: "status", "aria-live": "polite", "data-fact": "reconcile-progress" });
  const progressBox = h("div", { hidden: true },
    h("label", { for: "reconcile-progress", class: "visually-hidden" }, "Accounts checked"), progress, progressText);
  const result = h("div");
  const downloads = [];
  let stopped = false;
  let running = false;
  stopButton.addEventListener("click", () => {
    stopped = true;
    stopButton.disabled = true;
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (running) return;
    running = true;
    stopped = false;
    startButton.disabled = true;
    stopButton.hidden = false;
    stopButton.disabled = false;
    progressBox.hidden = false;
    replace(result);
    const filter = valueOf(form, "partnerOnly") ? { partnerAccount: true } : null;
    let checked = 0;
    let total = 0;
    let pending = 0;
    const mismatches = [];
    let failure = null;
    const update = () => {
      progress.max = Math.max(1, total);
      progress.value = checked;
      progressText.textContent = `${checked.toLocaleString("en")} of ${total.toLocaleString("en")} accounts checked · ${mismatches.length} mismatching`;
    };
    update();
    try {
      let after = null;
      for (;;) {
        const data = await gql(QUERY, { first: PAGE_SIZE, after, filter });
        const page = data.metricsReconciliation;
        total = page.totalCount;
        for (const { node } of page.edges) {
          checked += 1;
          if (node.account.pendingMetricChanges > 0) pending += 1;
          if (!node.matches) {
            const differences = METRICS.filter(([m]) => !same(node.live[m], node.recomputed[m]))
              .map(([metric, label]) => ({ metric, label, live: node.live[metric], recomputed: node.recomputed[metric] }));
            // The service's verdict stands even where no value differs as the console reads them.
            if (!differences.length) differences.push({ metric: "", label: "(the service reports a difference)", live: null, recomputed: null });
            mismatches.push({ account: node.account, differences });
          }
        }
        update();
        if (!page.pageInfo.hasNextPage || stopped) break;
        after = page.pageInfo.endCursor;
      }
    } catch (e) {
      failure = e;
    }
    running = false;
    startButton.disabled = false;
    stopButton.hidden = true;
    show({ checked, total, pending, mismatches, failure, partial: stopped && checked < total });
  });

  function show({ checked, total, pending, mismatches, failure, partial }) {
    const summary = mismatches.length
      ? `${mismatches.length} of ${checked} accounts do not match their documents.`
      : `All ${checked} accounts checked match their documents.`;
    let download = null;
    if (mismatches.length) {
      const url = URL.createObjectURL(new Blob([report(mismatches)], { type: "text/csv" }));
      downloads.push(url);
      download = h("p", {}, h("a", { class: "button secondary", href: url, download: "reconciliation.csv" }, "Download the report (CSV)"));
    }
    replace(result, h("section", { class: "card", "aria-labelledby": "reconcile-result-h" },
      h("h2", { id: "reconcile-result-h" }, "Result"),
      failure ? errorPanel(`Reconciliation stopped: ${failure instanceof ApiError ? failure.message : failure.message || failure}`) : null,
      partial ? h("p", {}, `Stopped after ${checked} of ${total} accounts.`) : null,
      h("p", { "data-fact": "reconcile-summary" }, summary),
      pending ? h("p", { class: "muted" }, `${pending} partner accounts have changes waiting for a refresh: their live metrics (stored plus pending) are what is compared.`) : null,
      download,
      mismatches.length
        ? tableRegion("Mismatching accounts", h("table", {},
          h("caption", {}, "Accounts whose live metrics differ from their documents"),
          h("thead", {}, h("tr", {},
            h("th", { scope: "col" }, "Account"), h("th", { scope: "col" }, "Partner"), h("th", { scope: "col", class: "num" }, "Pending changes"),
            h("th", { scope: "col" }, "Metric"), h("th", { scope: "col", class: "num" }, "Live"), h("th", { scope: "col", class: "num" }, "Recomputed from documents"))),
          h("tbody", {}, mismatches.flatMap((m) => m.differences.map((d, i) => h("tr", { dataset: { account: m.account.accountNumber, metric: d.metric } },
            i === 0
              ? h("th", { scope: "row", rowspan: String(m.differences.length) },
                h("a", { href: `#/accounts/${encodeURIComponent(m.account.accountNumber)}` }, m.account.accountNumber),
                h("br"), h("span", { class: "muted" }, m.account.name))
              : null,
            i === 0 ? h("td", { rowspan: String(m.differences.length) }, m.account.partnerAccount ? "yes" : "no") : null,
            i === 0 ? h("td", { class: "num", rowspan: String(m.differences.length) }, String(m.account.pendingMetricChanges)) : null,
            h("td", {}, d.label),
            h("td", { class: "num differs" }, d.live ?? "—"),
            h("td", { class: "num" }, d.recomputed ?? "—"))))))) : null));
    announce(summary);
  }

  main.append(
    h("p", { class: "muted" }, "Every account's live metrics (stored plus pending changes) against the metrics its invoices, memos, payments and subscriptions make, as ",
      h("code", {}, "partnerbill reconcile"), " checks them: the sign-off after a migration."),
    h("section", { class: "card", "aria-labelledby": "reconcile-h" }, h("h2", { id: "reconcile-h" }, "Check the tenant"), form, progressBox),
    result);
  return () => {
    stopped = true;
    for (const url of downloads) URL.revokeObjectURL(url);
  };
}
