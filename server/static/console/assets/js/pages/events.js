// Events: the tenant's feed (Query.events), newest first, narrowed by type and account, and
// followed live by polling from the last cursor, as `partnerbill events tail` follows it; and,
// where the server delivers webhooks, its endpoints with every delivery attempt.

import { ApiError, features, gql } from "../api.js";
import { announce, badge, errorPanel, h, instant, replace, tableRegion } from "../dom.js";
import { field, valueOf } from "../forms.js";
import { pagedTable } from "../paged.js";

const FEED_PAGE = 500; // the API's largest page: the fewest calls to reach the feed's end
const SHOWN = 200; // the newest events kept on the page
const POLL_MS = 2000;

const FEED = `query ConsoleEvents($after: String, $first: Int, $types: [EventType!], $accounts: [String!]) {
  events(after: $after, first: $first, types: $types, accountNumbers: $accounts) {
    edges { node { id cursor type occurredAt accountNumber data } }
    pageInfo { hasNextPage endCursor } } }`;

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

function accountLink(number) {
  return number
    ? h("a", { href: `#/accounts/${encodeURIComponent(number)}` }, number)
    : h("span", { class: "muted" }, "—");
}

function dataCell(data) {
  const compact = JSON.stringify(data);
  const short = compact.length > 72 ? `${compact.slice(0, 71)}…` : compact;
  return h("details", { class: "event-data" }, h("summary", {}, h("code", {}, short)),
    h("pre", {}, JSON.stringify(data, null, 2)));
}

export async function eventsPage(main, params, query) {
  const feats = await features();
  main.append(h("h1", { tabindex: "-1" }, "Events"));
  if (!feats.query.has("events")) {
    main.append(errorPanel("This server has no event feed (Query.events)."));
    return undefined;
  }
  const typeData = await gql(`query ConsoleEventTypes { __type(name: "EventType") { enumValues { name } } }`);
  const types = (typeData.__type?.enumValues || []).map((v) => v.name);
  const type = query.get("type") || "";
  const accounts = (query.get("accounts") || "").split(/[\s,]+/).filter(Boolean);
  const live = query.get("live") !== "0";

  const filterForm = h("form", { class: "filters", role: "search", "aria-label": "Filter events" },
    field({ label: "Type", path: "type", value: type, options: [["", "Any type"], ...types.map((t) => [t, t])] }),
    field({ label: "Account numbers", path: "accounts", value: accounts.join(" "),
            hint: "Separated by commas or spaces; empty for all." }),
    field({ label: "Follow live", path: "live", type: "checkbox", value: live,
            hint: `New events appear at the top (read every ${POLL_MS / 1000} s from the last cursor).` }),
    h("div", { class: "actions" },
      h("button", { type: "submit" }, "Apply"),
      h("a", { class: "button secondary", href: "#/events" }, "Clear")));
  filterForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    const t = valueOf(filterForm, "type");
    if (t) next.set("type", t);
    const a = valueOf(filterForm, "accounts").split(/[\s,]+/).filter(Boolean);
    if (a.length) next.set("accounts", a.join(","));
    if (!valueOf(filterForm, "live")) next.set("live", "0");
    window.location.hash = `#/events${next.toString() ? `?${next}` : ""}`;
  });

  const status = h("p", { class: "muted", role: "status", "data-fact": "events-status" }, "Reading the feed…");
  const error = h("div");
  const tbody = h("tbody");
  const table = h("table", {},
    h("caption", { class: "visually-hidden" }, "Events, newest first"),
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "When"), h("th", { scope: "col" }, "Type"),
      h("th", { scope: "col" }, "Account"), h("th", { scope: "col" }, "Data"))),
    tbody);

  const variables = { after: null, first: FEED_PAGE, types: type ? [type] : null, accounts: accounts.length ? accounts : null };
  let shown = []; // newest first
  let read = 0;
  let stopped = false;

  function row(e) {
    return h("tr", { dataset: { eventType: e.type, eventId: e.id } },
      h("td", {}, instant(e.occurredAt)),
      h("th", { scope: "row" }, e.type),
      h("td", {}, accountLink(e.accountNumber)),
      h("td", { class: "wrap" }, dataCell(e.data)));
  }

  function render() {
    replace(tbody, shown.length
      ? shown.map(row)
      : h("tr", {}, h("td", { colspan: "4", class: "muted" }, "No events.")));
  }

  // One page forward from the last cursor; the feed's end cursor is kept even when the page
  // is empty, so a poll never reads an event twice or misses one.
  async function readPage() {
    const page = (await gql(FEED, variables)).events;
    variables.after = page.pageInfo.endCursor;
    const fresh = page.edges.map((edge) => edge.node);
    read += fresh.length;
    if (fresh.length) shown = [...fresh.reverse(), ...shown].slice(0, SHOWN);
    return { fresh: fresh.length, more: page.pageInfo.hasNextPage };
  }

  function describe() {
    const base = `${read.toLocaleString("en")} events read${shown.length < read ? `, the newest ${shown.length} shown` : ""}`;
    return live ? `${base}. Following live.` : `${base}.`;
  }

  // Up to the feed's current end (the API reads it oldest first).
  async function catchUp() {
    try {
      for (;;) {
        const { more } = await readPage();
        if (stopped || !more) break;
        status.textContent = `${read.toLocaleString("en")} events read…`;
      }
      render();
      status.textContent = describe();
      return true;
    } catch (e) {
      status.textContent = "";
      replace(error, errorPanel(e instanceof ApiError ? e.message : String(e.message || e)));
      return false;
    }
  }

  // Then from the last cursor, every few seconds while the page is shown.
  async function poll() {
    while (!stopped) {
      await sleep(POLL_MS);
      if (stopped) return;
      if (document.visibilityState !== "visible") continue;
      try {
        let fresh = 0;
        for (;;) {
          const page = await readPage();
          fresh += page.fresh;
          if (!page.more || stopped) break;
        }
        if (stopped) return;
        replace(error);
        if (fresh) {
          render();
          status.textContent = describe();
          announce(`${fresh} new event${fresh === 1 ? "" : "s"}.`);
        }
      } catch (e) {
        // The next poll starts from the same cursor: nothing is lost meanwhile.
        if (!stopped) replace(error, errorPanel(`Reading new events failed: ${e instanceof ApiError ? e.message : e}; trying again.`));
      }
    }
  }

  main.append(
    h("p", { class: "muted" }, "What changed in this tenant, written with each change (kept 30 days), as ",
      h("code", {}, "partnerbill events tail"), " and webhooks deliver it."),
    filterForm,
    h("section", { class: "card", "aria-labelledby": "feed-h" },
      h("h2", { id: "feed-h" }, "Feed, newest first"), status, error, tableRegion("Events", table)));

  if (feats.query.has("webhookEndpoints")) main.append(webhooksSection());

  if (await catchUp() && live) poll();
  return () => {
    stopped = true;
  };
}

// -- webhook endpoints -----------------------------------------------------------------------

const ENDPOINT = "id url eventTypes description enabled disabledReason failingSince nextAttemptAt createdAt";

function webhooksSection() {
  const deliveries = h("div");
  const endpoints = pagedTable({
    label: "Webhook endpoints",
    empty: "No webhook endpoints.",
    columns: [
      { label: "URL", cell: (e) => e.url },
      { label: "Types", cell: (e) => (e.eventTypes.length ? e.eventTypes.join(", ") : h("span", { class: "muted" }, "every type")) },
      { label: "State", cell: (e) => (e.enabled
        ? (e.failingSince ? [badge("Failing", "failing"), " since ", instant(e.failingSince)] : badge("Enabled", "ok"))
        : [badge("Disabled", "plain"), e.disabledReason ? ` ${e.disabledReason}` : ""]) },
      { label: "Next attempt", cell: (e) => instant(e.nextAttemptAt) },
      { label: "Description", cell: (e) => e.description || "" },
      { label: "Deliveries", cell: (e) => h("button", { type: "button", class: "secondary", onclick: () => showDeliveries(e) }, "Show deliveries") },
    ],
    rowAttrs: (e) => ({ dataset: { endpoint: e.id } }),
    load: async (first, after) => {
      const data = await gql(`query ConsoleWebhookEndpoints($first: Int, $after: String) {
          webhookEndpoints(first: $first, after: $after) {
            totalCount pageInfo { hasNextPage endCursor } edges { node { ${ENDPOINT} } } } }`, { first, after });
      const conn = data.webhookEndpoints;
      return { totalCount: conn.totalCount, pageInfo: conn.pageInfo, nodes: conn.edges.map((e) => e.node) };
    },
  });

  function showDeliveries(endpoint) {
    const table = pagedTable({
      label: `Deliveries to ${endpoint.url}`,
      empty: "No delivery attempts yet.",
      columns: [
        { label: "When", cell: (d) => instant(d.attemptedAt) },
        { label: "Event", cell: (d) => d.eventType },
        { label: "Attempt", numeric: true, cell: (d) => String(d.attempt) },
        { label: "Result", cell: (d) => (d.succeeded ? badge("Delivered", "ok") : badge("Failed", "failing")) },
        { label: "HTTP status", numeric: true, cell: (d) => (d.statusCode === null ? "—" : String(d.statusCode)) },
        { label: "Duration", numeric: true, cell: (d) => `${Math.round(d.durationMs)} ms` },
        { label: "Error", cell: (d) => d.error || "" },
      ],
      rowAttrs: (d) => ({ dataset: { delivery: d.id } }),
      load: async (first, after) => {
        const data = await gql(`query ConsoleWebhookDeliveries($id: ID!, $first: Int, $after: String) {
            webhookDeliveries(endpointId: $id, first: $first, after: $after) {
              totalCount pageInfo { hasNextPage endCursor }
              edges { node { id eventId eventType attempt succeeded statusCode durationMs error attemptedAt } } } }`,
        { id: endpoint.id, first, after });
        const conn = data.webhookDeliveries;
        return { totalCount: conn.totalCount, pageInfo: conn.pageInfo, nodes: conn.edges.map((e) => e.node) };
      },
    });
    const refresh = h("button", { type: "button", class: "secondary", onclick: () => table.refresh() }, "Reload");
    replace(deliveries, h("h3", { id: "deliveries-h", tabindex: "-1" }, `Deliveries to ${endpoint.url}`),
      h("p", { class: "muted" }, "Every attempt, oldest first."), h("div", { class: "actions" }, refresh), table.element);
    table.reload().then(() => deliveries.querySelector("h3")?.focus());
  }

  endpoints.reload();
  return h("section", { class: "card", "aria-labelledby": "webhooks-h" },
    h("h2", { id: "webhooks-h" }, "Webhook endpoints"), endpoints.element, deliveries);
}
