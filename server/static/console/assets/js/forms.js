// Form fields with labels, hints and the typed errors of the API shown where they belong:
// a UserError's `field` is the path of the input at fault ("billToContact", "firstName").

import { h, newId, replace } from "./dom.js";

// One labelled input. `path` is the input field's path in the mutation's input object, as
// UserError.field names it.
export function field({ label, path, type = "text", value = "", required = false, hint = null,
                        options = null, attrs = {} }) {
  const id = newId("f");
  const hintId = hint ? `${id}-hint` : null;
  const errorId = `${id}-error`;
  let control;
  if (options) {
    control = h("select", { id, name: path, required, ...attrs },
      options.map(([v, text]) => h("option", { value: v, selected: String(value) === v }, text)));
  } else if (type === "checkbox") {
    control = h("input", { id, name: path, type, checked: Boolean(value), ...attrs });
  } else {
    control = h("input", { id, name: path, type, value: value ?? "", required, ...attrs });
  }
  control.dataset.path = path;
  if (hintId) control.setAttribute("aria-describedby", hintId);
  const labelEl = h("label", { for: id }, label, required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null);
  const error = h("p", { class: "field-error", id: errorId, hidden: true });
  const wrapper = type === "checkbox"
    ? h("div", { class: "field field-check" }, control, labelEl, hint ? h("p", { class: "hint", id: hintId }, hint) : null, error)
    : h("div", { class: "field" }, labelEl, control, hint ? h("p", { class: "hint", id: hintId }, hint) : null, error);
  wrapper.dataset.path = path;
  return wrapper;
}

export function fieldset(legend, ...children) {
  return h("fieldset", {}, h("legend", {}, legend), h("div", { class: "grid" }, children));
}

export function controlOf(form, path) {
  return form.querySelector(`[data-path="${CSS.escape(path)}"]:is(input, select, textarea)`);
}

export function valueOf(form, path) {
  const control = controlOf(form, path);
  if (!control) return undefined;
  if (control.type === "checkbox") return control.checked;
  return control.value.trim();
}

// The error summary at the top of a form, plus each error at its field. Returns true when
// there was anything to show.
export function showErrors(form, summary, errors) {
  clearErrors(form, summary);
  if (!errors || !errors.length) return false;
  const items = [];
  let firstControl = null;
  for (const error of errors) {
    let path = (error.field || error.extensions?.field || []).map(String);
    if (path[0] === "input") path = path.slice(1);
    const control = path.length ? closestControl(form, path) : null;
    if (control) {
      const wrapper = control.closest(".field");
      const message = wrapper.querySelector(".field-error");
      message.hidden = false;
      message.textContent = message.textContent ? `${message.textContent} ${error.message}` : error.message;
      control.setAttribute("aria-invalid", "true");
      const described = new Set((control.getAttribute("aria-describedby") || "").split(" ").filter(Boolean));
      described.add(message.id);
      control.setAttribute("aria-describedby", [...described].join(" "));
      firstControl ??= control;
      items.push(h("li", {}, h("a", { href: `#${control.id}`, onclick: (e) => { e.preventDefault(); control.focus(); } },
        `${labelText(control)}: ${error.message}`)));
    } else {
      items.push(h("li", {}, error.code ? `${error.message} (${error.code})` : error.message));
    }
  }
  replace(summary, h("h2", {}, "The service refused this:"), h("ul", {}, items));
  summary.hidden = false;
  (firstControl || summary).focus();
  return true;
}

export function clearErrors(form, summary) {
  summary.hidden = true;
  summary.replaceChildren();
  for (const message of form.querySelectorAll(".field-error")) {
    message.hidden = true;
    message.textContent = "";
  }
  for (const control of form.querySelectorAll("[aria-invalid]")) {
    control.removeAttribute("aria-invalid");
    const ids = (control.getAttribute("aria-describedby") || "").split(" ").filter((i) => !i.endsWith("-error"));
    if (ids.length) control.setAttribute("aria-describedby", ids.join(" "));
    else control.removeAttribute("aria-describedby");
  }
}

// The deepest control the path reaches: an error on a whole contact lands on its first field.
function closestControl(form, path) {
  for (let n = path.length; n > 0; n -= 1) {
    const prefix = path.slice(0, n).join(".");
    const exact = controlOf(form, prefix);
    if (exact) return exact;
    const inside = form.querySelector(`[data-path^="${CSS.escape(`${prefix}.`)}"]:is(input, select, textarea)`);
    if (inside) return inside;
  }
  return null;
}

function labelText(control) {
  const label = control.id ? control.form?.querySelector(`label[for="${CSS.escape(control.id)}"]`) : null;
  return label ? label.textContent.replace(/\s*\*$/, "").trim() : control.name;
}

export function errorSummary() {
  return h("div", { class: "alert alert-error error-summary", role: "alert", tabindex: "-1", hidden: true });
}
