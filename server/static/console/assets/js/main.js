// The console's router: one page, its views addressed by the URL fragment (#/accounts/...),
// so the server serves a single document and the browser's history works as usual.

import { ApiError, canConnect, features, setConnection } from "./api.js";
import { errorPanel, h } from "./dom.js";
import { accountPage } from "./pages/account.js";
import { editAccountPage, newAccountPage } from "./pages/account_form.js";
import { accountsPage } from "./pages/accounts.js";
import { billRunPage, billRunsPage } from "./pages/billruns.js";
import { eventsPage } from "./pages/events.js";
import { importsPage } from "./pages/imports.js";
import { reconcilePage } from "./pages/reconcile.js";
import { settingsPage } from "./pages/settings.js";

const ROUTES = [
  [/^\/accounts\/?$/, "accounts", "Accounts", accountsPage],
  [/^\/accounts\/new$/, "accounts", "New account", newAccountPage],
  [/^\/accounts\/([^/]+)\/edit$/, "accounts", "Edit account", editAccountPage],
  [/^\/accounts\/([^/]+)$/, "accounts", "Account", accountPage],
  [/^\/billruns\/?$/, "billruns", "Bill runs", billRunsPage],
  [/^\/billruns\/([^/]+)$/, "billruns", "Bill run", billRunPage],
  [/^\/imports\/?$/, "imports", "Imports", importsPage],
  [/^\/events\/?$/, "events", "Events", eventsPage],
  [/^\/reconciliation\/?$/, "reconciliation", "Reconciliation", reconcilePage],
  [/^\/settings$/, "settings", "Settings", settingsPage],
];

const main = document.getElementById("main");
let cleanup = null;
let generation = 0;

function parseHash() {
  const raw = window.location.hash.replace(/^#/, "") || "/accounts";
  const [path, search = ""] = raw.split("?", 2);
  return { path, query: new URLSearchParams(search) };
}

async function route() {
  if (window.location.hash && !window.location.hash.startsWith("#/")) return; // an in-page anchor
  const mine = ++generation;
  if (cleanup) {
    const done = cleanup;
    cleanup = null;
    done();
  }
  const { path, query } = parseHash();
  if (!canConnect() && path !== "/settings") {
    // Without a key every request would be refused: ask for one first.
    window.location.replace("#/settings?needKey=1");
    return;
  }
  // Sections a server does not have yet stay out of the navigation.
  if (canConnect()) {
    features().then((f) => {
      document.getElementById("nav-events").hidden = !f.query.has("events");
    }, () => {});
  }
  let match = null;
  for (const [pattern, section, title, render] of ROUTES) {
    const m = pattern.exec(path);
    if (m) {
      match = { section, title, render, params: m.slice(1).map(decodeURIComponent) };
      break;
    }
  }
  for (const link of document.querySelectorAll("nav a[data-section]")) {
    if (match && link.dataset.section === match.section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  main.replaceChildren();
  main.setAttribute("aria-busy", "true");
  if (!match) {
    document.title = "Not found · partnerbill console";
    main.append(h("h1", { tabindex: "-1" }, "Not found"), h("p", {}, h("a", { href: "#/accounts" }, "Go to accounts")));
  } else {
    document.title = `${match.title} · partnerbill console`;
    try {
      const stop = await match.render(main, match.params, query);
      if (mine !== generation) {
        // The operator moved on while this view loaded: stop what it started.
        if (typeof stop === "function") stop();
        return;
      }
      cleanup = typeof stop === "function" ? stop : null;
    } catch (e) {
      if (mine !== generation) return;
      main.append(errorPanel(e instanceof ApiError ? e.message : `Something went wrong: ${e.message || e}`));
    }
  }
  main.removeAttribute("aria-busy");
  // After a move inside the console, focus goes to the new view's heading, so keyboard and
  // screen-reader users start there; on the first load the page starts at its top as usual
  // (the skip link first).
  const heading = main.querySelector("h1");
  if (mine > 1 && heading && !main.contains(document.activeElement)) {
    heading.focus({ preventScroll: true });
  }
}

document.getElementById("skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  (main.querySelector("h1") || main).focus();
});

window.addEventListener("hashchange", route);
setConnection("idle", canConnect() ? "Live updates idle" : "No API key: see Settings");
// Read the schema's features early; each view waits for the same answer.
if (canConnect()) features().catch(() => {});
route();
