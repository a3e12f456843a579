// Accounts: search by number or name, filters, a page at a time.

import { features, gql } from "../api.js";
import { badge, h, instant, money } from "../dom.js";
import { field } from "../forms.js";
import { pagedTable } from "../paged.js";

function localInputToIso(value) {
  if (!value) return null;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
}

export async function accountsPage(main, params, query) {
  const feats = await features();
  const hasPending = feats.account.has("pendingMetricChanges");
  const canFilterPending = feats.filter.has("hasPendingMetricChanges");
  const q = query.get("q") || "";
  const partner = query.get("partner") || "";
  const pending = query.get("pending") === "1";
  const stale = query.get("stale") || "";
  const status = query.get("status") || "";

  const filterForm = h("form", { class: "filters", role: "search", "aria-label": "Find accounts" },
    field({ label: "Search number or name", path: "q", type: "search", value: q }),
    field({ label: "Partner accounts", path: "partner", value: partner,
            options: [["", "All accounts"], ["yes", "Partner accounts only"], ["no", "Ordinary accounts only"]] }),
    field({ label: "Status", path: "status", value: status,
            options: [["", "Any status"], ["ACTIVE", "Active"], ["CANCELED", "Canceled"]] }),
    field({ label: "Metrics stale since", path: "stale", type: "datetime-local", value: stale,
            hint: "Last updated before this (local time)." }),
    canFilterPending ? field({ label: "With pending metric changes", path: "pending", type: "checkbox", value: pending }) : null,
    h("div", { class: "actions" },
      h("button", { type: "submit" }, "Apply"),
      h("a", { class: "button secondary", href: "#/accounts" }, "Clear")));
  filterForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(filterForm);
    const next = new URLSearchParams();
    for (const name of ["q", "partner", "status", "stale"]) {
      const v = String(data.get(name) || "").trim();
      if (v) next.set(name, v);
    }
    if (data.get("pending")) next.set("pending", "1");
    window.location.hash = `#/accounts${next.toString() ? `?${next}` : ""}`;
  });

  const filter = {};
  if (q) filter.nameContains = q;
  if (partner) filter.partnerAccount = partner === "yes";
  if (status) filter.status = status;
  if (stale) filter.metricsStaleSince = localInputToIso(stale);
  if (pending && canFilterPending) filter.hasPendingMetricChanges = true;

  const node = `accountNumber name partnerAccount currency status lastMetricsUpdate
    metrics { balance }${hasPending ? " pendingMetricChanges" : ""}`;
  // A search also looks the text up as an account number: numbers are exact, names contain.
  const listQuery = `query ConsoleAccounts($filter: AccountFilter, $first: Int, $after: String${q ? ", $number: String!" : ""}) {
    accounts(filter: $filter, first: $first, after: $after) {
      totalCount pageInfo { hasNextPage endCursor } edges { node { ${node} } }
    }
    ${q ? `byNumber: account(accountNumber: $number) { ${node} }` : ""}
  }`;

  const table = pagedTable({
    label: "Accounts",
    empty: "No account matches.",
    columns: [
      { label: "Number", cell: (a) => h("a", { href: `#/accounts/${encodeURIComponent(a.accountNumber)}` }, a.accountNumber) },
      { label: "Name", cell: (a) => a.name },
      { label: "Partner", cell: (a) => (a.partnerAccount ? badge("Partner", "partner") : h("span", { class: "muted" }, "Ordinary")) },
      { label: "Balance", numeric: true, cell: (a) => money(a.metrics.balance, a.currency) },
      { label: "Last metrics update", cell: (a) => instant(a.lastMetricsUpdate) },
      { label: "Pending changes", numeric: true,
        cell: (a) => (hasPending ? String(a.pendingMetricChanges) : h("span", { class: "muted", title: "This server does not report pending changes" }, "—")) },
    ],
    rowAttrs: (a) => ({ dataset: { account: a.accountNumber } }),
    load: async (first, after) => {
      const variables = { filter, first, after };
      if (q) variables.number = q;
      const data = await gql(listQuery, variables);
      let nodes = data.accounts.edges.map((e) => e.node);
      const exact = data.byNumber;
      if (exact && !after && !nodes.some((a) => a.accountNumber === exact.accountNumber)) nodes = [exact, ...nodes];
      return { totalCount: data.accounts.totalCount + (exact && nodes[0] === exact ? 1 : 0), pageInfo: data.accounts.pageInfo, nodes };
    },
  });

  main.append(
    h("div", { class: "page-head" },
      h("h1", { tabindex: "-1" }, "Accounts"),
      h("a", { class: "button", href: "#/accounts/new" }, "New account")),
    filterForm,
    table.element,
  );
  await table.reload();
}
