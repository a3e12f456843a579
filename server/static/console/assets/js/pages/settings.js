// Tenant settings (refresh interval, lock wait) and the API key this browser uses.

import { ApiError, canConnect, gql, keySource, saveKey, storedKey } from "../api.js";
import { announce, errorPanel, h } from "../dom.js";
import { clearErrors, errorSummary, field, fieldset, showErrors, valueOf } from "../forms.js";

export async function settingsPage(main) {
  main.append(h("h1", { tabindex: "-1" }, "Settings"));
  if (!canConnect()) {
    main.append(h("div", { class: "alert alert-info", role: "status" },
      "This server needs an API key. Save one below (`partnerbill tenant create` prints one) to use the console."));
  }
  const tenantSection = h("section", { class: "card", "aria-labelledby": "tenant-h" }, h("h2", { id: "tenant-h" }, "Tenant"));
  main.append(keySection(), tenantSection);
  if (!canConnect()) {
    tenantSection.append(h("p", { class: "muted" }, "The tenant's settings show once a key is saved."));
    return undefined;
  }
  try {
    const data = await gql("query ConsoleSettings { tenantSettings { metricsRefreshInterval lockWait } }");
    tenantSection.append(tenantForm(data.tenantSettings));
  } catch (e) {
    tenantSection.append(errorPanel(e instanceof ApiError ? e.message : String(e)));
  }
  return undefined;
}

function tenantForm(settings) {
  const summary = errorSummary();
  const saved = h("p", { class: "muted", role: "status" });
  const submit = h("button", { type: "submit" }, "Save settings");
  const form = h("form", { novalidate: true },
    summary,
    fieldset("Metrics",
      field({ label: "Metrics refresh interval (seconds)", path: "metricsRefreshInterval", type: "number",
              value: settings.metricsRefreshInterval, attrs: { min: "1", inputmode: "numeric" },
              hint: "How often partner accounts' pending changes are folded into their metrics." }),
      field({ label: "Lock wait (milliseconds)", path: "lockWait", type: "number", value: settings.lockWait,
              attrs: { min: "0", max: "60000", inputmode: "numeric" },
              hint: "How long a write on an ordinary account waits for its lock before answering LOCK_COMPETITION; 0 does not wait." })),
    h("div", { class: "actions" }, submit), saved);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form, summary);
    saved.textContent = "";
    const input = {};
    for (const name of ["metricsRefreshInterval", "lockWait"]) {
      const v = valueOf(form, name);
      if (v !== "") input[name] = Number(v);
    }
    submit.disabled = true;
    try {
      const data = await gql(`mutation ConsoleUpdateSettings($input: UpdateTenantSettingsInput!) {
          updateTenantSettings(input: $input) { tenantSettings { metricsRefreshInterval lockWait }
            errors { __typename code message field } } }`, { input });
      const payload = data.updateTenantSettings;
      if (showErrors(form, summary, payload.errors)) return;
      saved.textContent = `Saved: refresh every ${payload.tenantSettings.metricsRefreshInterval} s, lock wait ${payload.tenantSettings.lockWait} ms.`;
      announce("Settings saved.");
    } catch (e) {
      showErrors(form, summary, e instanceof ApiError && e.errors.length ? e.errors : [{ message: String(e.message || e) }]);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function keySection() {
  const status = h("p", { role: "status" });
  const describe = () => {
    const source = keySource();
    status.textContent = source === "stored"
      ? "This browser sends the API key saved below."
      : source === "development"
        ? "This browser sends the development key of this server (anonymous development access is on)."
        : "No API key: save one to use the console.";
  };
  describe();
  const form = h("form", { autocomplete: "off" },
    field({ label: "API key", path: "apiKey", type: "password", value: storedKey(),
            hint: "Kept in this browser's local storage and sent as 'Authorization: Bearer <key>'." }),
    h("div", { class: "actions" },
      h("button", { type: "submit" }, "Save key"),
      h("button", { type: "button", class: "secondary", onclick: () => {
        saveKey("");
        form.querySelector("input").value = "";
        describe();
        announce("API key forgotten.");
      } }, "Forget key")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    saveKey(valueOf(form, "apiKey"));
    describe();
    announce("API key saved.");
    // Start over on the accounts, now with the key.
    window.location.hash = "#/accounts";
  });
  const section = h("section", { class: "card", "aria-labelledby": "key-h" }, h("h2", { id: "key-h" }, "API key"), status, form);
  return section;
}
