// One account: stored metrics beside live ones and how current they are, "Refresh now",
// values that change as refreshes land (accountMetricsUpdated), and its documents.

import { ApiError, features, gql, subscribe } from "../api.js";
import { announce, badge, errorPanel, formatInstant, h, instant, money, replace } from "../dom.js";
import { pagedTable } from "../paged.js";

const METRIC_FIELDS = `balance totalInvoiceBalance totalDebitMemoBalance unappliedPaymentAmount
  unappliedCreditMemoAmount contractedMrr creditBalance lastInvoiceDate currency`;

const METRIC_ROWS = [
  ["balance", "Balance"],
  ["totalInvoiceBalance", "Total invoice balance"],
  ["totalDebitMemoBalance", "Total debit memo balance"],
  ["unappliedPaymentAmount", "Unapplied payments"],
  ["unappliedCreditMemoAmount", "Unapplied credit memos"],
  ["contractedMrr", "Contracted MRR"],
  ["creditBalance", "Credit balance"],
  ["lastInvoiceDate", "Last invoice date"],
];

const CONTACT = "firstName lastName workEmail workPhone address1 address2 city state postalCode country";

function freshnessFields(feats) {
  return [
    feats.account.has("metricsCurrentAsOf") ? "metricsCurrentAsOf" : "",
    feats.account.has("pendingMetricChanges") ? "pendingMetricChanges" : "",
    feats.account.has("liveMetrics") ? `liveMetrics { ${METRIC_FIELDS} }` : "",
  ].join(" ");
}

export async function accountPage(main, [number]) {
  const feats = await features();
  const fresh = freshnessFields(feats);
  const hasLive = feats.account.has("liveMetrics");
  const metricsState = `lastMetricsUpdate metricsRefreshError metrics { ${METRIC_FIELDS} } ${fresh}`;
  const data = await gql(`query ConsoleAccount($n: String!) { account(accountNumber: $n) {
      accountNumber name currency status billCycleDay paymentTerm batch partnerAccount createdAt
      lastPaymentDate lastPaymentAmount
      billToContact { ${CONTACT} } soldToContact { ${CONTACT} }
      ${metricsState}
    } }`, { n: number });
  const account = data.account;
  if (!account) {
    main.append(h("h1", { tabindex: "-1" }, "Account not found"),
      h("p", {}, `No account numbered ${number} in this tenant. `, h("a", { href: "#/accounts" }, "Back to accounts")));
    return undefined;
  }
  document.title = `${account.name} · partnerbill console`;
  const enc = encodeURIComponent(account.accountNumber);

  // -- metrics panel -----------------------------------------------------------------
  const state = { ...account };
  const freshness = h("dl", { class: "facts" });
  const metricsBody = h("tbody");
  const updateNote = h("p", { class: "muted update-note", role: "status", "aria-live": "polite" });
  const refreshError = h("div");

  function renderMetrics() {
    const live = hasLive ? state.liveMetrics : null;
    replace(freshness,
      h("dt", {}, "Last metrics update"), h("dd", { "data-fact": "lastMetricsUpdate" }, instant(state.lastMetricsUpdate)),
      feats.account.has("metricsCurrentAsOf")
        ? [h("dt", {}, "Current as of"), h("dd", { "data-fact": "metricsCurrentAsOf" }, instant(state.metricsCurrentAsOf))]
        : null,
      feats.account.has("pendingMetricChanges")
        ? [h("dt", {}, "Pending changes"), h("dd", { "data-fact": "pendingMetricChanges" }, String(state.pendingMetricChanges))]
        : null,
      h("dt", {}, "Metrics"), h("dd", {}, account.partnerAccount
        ? "Computed by the periodic refresh (partner account)"
        : "Always current (ordinary account)"));
    replace(refreshError, state.metricsRefreshError
      ? errorPanel(`The refresh set this account aside: ${state.metricsRefreshError}`) : null);
    replace(metricsBody, METRIC_ROWS.map(([key, label]) => {
      const stored = state.metrics[key];
      const liveValue = live ? live[key] : undefined;
      const differs = live && liveValue !== stored;
      const show = (v) => (key === "lastInvoiceDate" ? (v || "—") : money(v, key === "contractedMrr" ? null : state.metrics.currency));
      return h("tr", { dataset: { metric: key } },
        h("th", { scope: "row" }, label),
        h("td", { class: "num", dataset: { kind: "stored" } }, show(stored)),
        hasLive ? h("td", { class: `num${differs ? " differs" : ""}`, dataset: { kind: "live" } },
          show(liveValue), differs ? h("span", { class: "visually-hidden" }, " (not yet in stored)") : null) : null,
        state.reconciliation ? h("td", { class: "num", dataset: { kind: "recomputed" } }, show(state.reconciliation.recomputed[key])) : null);
    }));
    recomputedHead.hidden = !state.reconciliation;
  }

  const recomputedHead = h("th", { scope: "col", class: "num", hidden: true }, "Recomputed from documents");
  // Reconciliation, where the server has it: the metrics recomputed from the documents alone.
  const canReconcile = feats.query.has("metricsReconciliation");
  const reconcileButton = canReconcile ? h("button", { type: "button", class: "secondary" }, "Check against documents") : null;
  const reconcileNote = h("p", { role: "status", class: "muted" });
  reconcileButton?.addEventListener("click", async () => {
    reconcileButton.disabled = true;
    reconcileNote.textContent = "Recomputing from the documents…";
    try {
      const res = await gql(`query ConsoleReconcile($n: [String!]) { metricsReconciliation(accountNumbers: $n) {
          edges { node { matches recomputed { ${METRIC_FIELDS} } } } } }`, { n: [account.accountNumber] });
      const [edge] = res.metricsReconciliation.edges;
      state.reconciliation = edge ? edge.node : null;
      renderMetrics();
      reconcileNote.textContent = !edge ? "Nothing to compare."
        : edge.node.matches ? "Live metrics match the documents."
          : "Live metrics do not match the documents: report this account.";
    } catch (e) {
      reconcileNote.textContent = `Check failed: ${e instanceof ApiError ? e.message : e}`;
    } finally {
      reconcileButton.disabled = false;
    }
  });

  const refreshButton = h("button", { type: "button" }, "Refresh now");
  refreshButton.addEventListener("click", async () => {
    refreshButton.disabled = true;
    refreshButton.setAttribute("aria-busy", "true");
    updateNote.textContent = "Refreshing…";
    try {
      const res = await gql(`mutation ConsoleRefresh($n: String!) {
        refreshAccountMetrics(input: {accountNumber: $n}) {
          account { ${metricsState} } errors { code message field } } }`, { n: account.accountNumber });
      const payload = res.refreshAccountMetrics;
      if (payload.errors.length) {
        updateNote.textContent = `Refresh refused: ${payload.errors.map((e) => e.message).join("; ")}`;
      } else {
        Object.assign(state, payload.account);
        renderMetrics();
        updateNote.textContent = `Refreshed at ${formatInstant(state.lastMetricsUpdate)}.`;
      }
    } catch (e) {
      updateNote.textContent = `Refresh failed: ${e instanceof ApiError ? e.message : e}`;
    } finally {
      refreshButton.disabled = false;
      refreshButton.removeAttribute("aria-busy");
    }
  });

  renderMetrics();

  const documentTables = []; // filled below, once the tables exist
  // Refreshes and synchronous updates arrive pushed; the event carries the stored values.
  const stopEvents = subscribe(`subscription ConsoleAccountMetrics($n: [String!]) {
      accountMetricsUpdated(accountNumbers: $n) {
        reason metrics { ${METRIC_FIELDS} lastMetricsUpdate }
        account { lastMetricsUpdate metricsRefreshError ${fresh} } } }`,
  { n: [account.accountNumber] }, {
    next: (event) => {
      const e = event.accountMetricsUpdated;
      Object.assign(state, e.account, { metrics: e.metrics });
      renderMetrics();
      const text = `Metrics updated (${e.reason === "REFRESH" ? "refresh" : "write"}) at ${formatInstant(e.metrics.lastMetricsUpdate)}.`;
      updateNote.textContent = text;
      announce(text);
      // What moved the metrics are documents: show them as they are now.
      for (const table of documentTables) table.refresh();
    },
    resync: () => reloadMetrics(),
    error: (errors) => {
      updateNote.textContent = `Live updates stopped: ${errors.map((x) => x.message).join("; ")}`;
    },
  });

  async function reloadMetrics() {
    try {
      const res = await gql(`query ConsoleMetrics($n: String!) { account(accountNumber: $n) { ${metricsState} } }`, { n: account.accountNumber });
      if (res.account) {
        Object.assign(state, res.account);
        renderMetrics();
      }
    } catch {
      // The next event or poll brings the values; the connection line says what is wrong.
    }
  }

  // Writes to a partner account send no event (only refreshes do), so the pending count and
  // live values are read again every few seconds while the page is shown.
  let poll = null;
  if (fresh.trim()) {
    poll = setInterval(async () => {
      if (document.visibilityState !== "visible") return;
      try {
        const res = await gql(`query ConsoleFreshness($n: String!) { account(accountNumber: $n) { ${fresh} } }`, { n: account.accountNumber });
        if (res.account) {
          Object.assign(state, res.account);
          renderMetrics();
        }
      } catch {
        // As above: a failed poll is retried by the next one.
      }
    }, 3000);
  }

  // -- details ---------------------------------------------------------------------
  const contact = (c) => h("address", {},
    `${c.firstName} ${c.lastName}`,
    [c.workEmail, c.workPhone, c.address1, c.address2, [c.postalCode, c.city].filter(Boolean).join(" "), c.state, c.country]
      .filter(Boolean).map((line) => [h("br"), line]));

  const details = h("dl", { class: "facts" },
    h("dt", {}, "Currency"), h("dd", {}, account.currency),
    h("dt", {}, "Status"), h("dd", {}, account.status),
    h("dt", {}, "Bill cycle day"), h("dd", {}, String(account.billCycleDay)),
    h("dt", {}, "Payment term"), h("dd", {}, account.paymentTerm),
    h("dt", {}, "Batch"), h("dd", {}, account.batch),
    h("dt", {}, "Created"), h("dd", {}, instant(account.createdAt)),
    h("dt", {}, "Last payment"), h("dd", {}, account.lastPaymentDate
      ? [account.lastPaymentDate, " · ", money(account.lastPaymentAmount, account.currency)] : "none"),
    h("dt", {}, "Bill to"), h("dd", {}, contact(account.billToContact)),
    h("dt", {}, "Sold to"), h("dd", {}, contact(account.soldToContact)));

  // -- documents -------------------------------------------------------------------
  const page = (connection) => ({
    totalCount: connection.totalCount,
    pageInfo: connection.pageInfo,
    nodes: connection.edges.map((e) => e.node),
  });
  const connectionQuery = (name, args, node) => `query ConsoleAccount${name}($n: String!, $first: Int, $after: String${args.decl}) {
      account(accountNumber: $n) { ${name}(first: $first, after: $after${args.pass}) {
        totalCount pageInfo { hasNextPage endCursor } edges { node { ${node} } } } } }`;
  const plain = { decl: "", pass: "" };
  const loader = (name, node, args = plain, vars = () => ({})) => async (first, after) => {
    const res = await gql(connectionQuery(name, args, node), { n: account.accountNumber, first, after, ...vars() });
    return page(res.account[name]);
  };
  const cur = account.currency;

  let role = "OWNER";
  const subscriptionsTable = pagedTable({
    label: "Subscriptions",
    empty: "No subscriptions in this role.",
    columns: [
      { label: "Subscription", cell: (s) => s.subscriptionNumber },
      { label: "Status", cell: (s) => s.status },
      { label: "Owner", cell: (s) => accountLink(s.subscriptionOwnerAccountNumber) },
      { label: "Invoice owner", cell: (s) => accountLink(s.invoiceOwnerAccountNumber) },
      { label: "Term start", cell: (s) => s.termStartDate },
      { label: "MRR", numeric: true, cell: (s) => money(s.mrr, s.currency) },
    ],
    load: loader("subscriptions",
      "subscriptionNumber status subscriptionOwnerAccountNumber invoiceOwnerAccountNumber termStartDate mrr currency",
      { decl: ", $role: SubscriptionRole", pass: ", role: $role" }, () => ({ role })),
  });
  const roleGroup = h("div", { class: "segmented", role: "group", "aria-label": "Subscriptions of this account" });
  for (const [value, text] of [["OWNER", "As subscription owner"], ["INVOICE_OWNER", "As invoice owner"]]) {
    const button = h("button", { type: "button", class: "secondary", "aria-pressed": String(value === role) }, text);
    button.addEventListener("click", () => {
      role = value;
      for (const b of roleGroup.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b === button));
      subscriptionsTable.reload();
    });
    roleGroup.append(button);
  }

  const invoicesTable = pagedTable({
    label: "Invoices",
    empty: "No invoices.",
    columns: [
      { label: "Invoice", cell: (i) => i.invoiceNumber },
      { label: "Date", cell: (i) => i.invoiceDate },
      { label: "Due", cell: (i) => i.dueDate },
      { label: "Status", cell: (i) => i.status },
      { label: "Source", cell: (i) => i.source },
      { label: "Amount", numeric: true, cell: (i) => money(i.amount, cur) },
      { label: "Balance", numeric: true, cell: (i) => money(i.balance, cur) },
    ],
    load: loader("invoices", "invoiceNumber invoiceDate dueDate status source amount balance"),
  });
  const creditMemosTable = pagedTable({
    label: "Credit memos",
    empty: "No credit memos.",
    columns: [
      { label: "Memo", cell: (m) => m.memoNumber },
      { label: "Date", cell: (m) => m.memoDate },
      { label: "Status", cell: (m) => m.status },
      { label: "Amount", numeric: true, cell: (m) => money(m.amount, cur) },
      { label: "Unapplied", numeric: true, cell: (m) => money(m.unappliedAmount, cur) },
    ],
    load: loader("creditMemos", "memoNumber memoDate status amount unappliedAmount"),
  });
  const debitMemosTable = pagedTable({
    label: "Debit memos",
    empty: "No debit memos.",
    columns: [
      { label: "Memo", cell: (m) => m.memoNumber },
      { label: "Date", cell: (m) => m.memoDate },
      { label: "Due", cell: (m) => m.dueDate },
      { label: "Status", cell: (m) => m.status },
      { label: "Amount", numeric: true, cell: (m) => money(m.amount, cur) },
      { label: "Balance", numeric: true, cell: (m) => money(m.balance, cur) },
    ],
    load: loader("debitMemos", "memoNumber memoDate dueDate status amount balance"),
  });
  const paymentsTable = pagedTable({
    label: "Payments",
    empty: "No payments.",
    columns: [
      { label: "Payment", cell: (p) => p.paymentNumber },
      { label: "Effective", cell: (p) => p.effectiveDate },
      { label: "Method", cell: (p) => p.method },
      { label: "Status", cell: (p) => p.status },
      { label: "Amount", numeric: true, cell: (p) => money(p.amount, cur) },
      { label: "Unapplied", numeric: true, cell: (p) => money(p.unappliedAmount, cur) },
    ],
    load: loader("payments", "paymentNumber effectiveDate method status amount unappliedAmount"),
  });

  documentTables.push(subscriptionsTable, invoicesTable, paymentsTable, creditMemosTable, debitMemosTable);
  const section = (id, title, ...body) => h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), body);

  main.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/accounts" }, "Accounts"), " / ", account.accountNumber),
    h("div", { class: "page-head" },
      h("h1", { tabindex: "-1" }, account.name, " ", h("span", { class: "muted" }, account.accountNumber)),
      h("div", { class: "actions" },
        account.partnerAccount ? badge("Partner account", "partner") : badge("Ordinary account", "plain"),
        h("a", { class: "button secondary", href: `#/accounts/${enc}/edit` }, "Edit account"),
        h("a", { class: "button secondary", href: `#/billruns?accounts=${enc}` }, "Bill this account"))),
    section("metrics-h", "Metrics",
      freshness, refreshError,
      h("div", { class: "actions" }, refreshButton, reconcileButton),
      updateNote, reconcileNote,
      h("div", { class: "table-wrap", role: "region", "aria-label": "Metrics", tabindex: "0" },
        h("table", { class: "metrics" },
          h("caption", { class: "visually-hidden" }, "Stored and live metrics"),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Metric"), h("th", { scope: "col", class: "num" }, "Stored"),
            hasLive ? h("th", { scope: "col", class: "num" }, "Live (stored plus pending)") : null, recomputedHead)),
          metricsBody))),
    section("details-h", "Details", details),
    section("subs-h", "Subscriptions", roleGroup, subscriptionsTable.element),
    section("invoices-h", "Invoices", invoicesTable.element),
    section("payments-h", "Payments", paymentsTable.element),
    section("cm-h", "Credit memos", creditMemosTable.element),
    section("dm-h", "Debit memos", debitMemosTable.element),
  );
  await Promise.all(documentTables.map((t) => t.reload()));

  return () => {
    stopEvents();
    if (poll) clearInterval(poll);
  };
}

function accountLink(number) {
  return h("a", { href: `#/accounts/${encodeURIComponent(number)}` }, number);
}
