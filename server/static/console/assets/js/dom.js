// DOM helpers. Every piece of data reaches the page as a text node or an attribute value,
// never as markup, so nothing a client stored can run in an operator's browser.

export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "value") el.value = value;
    else if (name === "checked") el.checked = Boolean(value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

let uid = 0;
export function newId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

// Screen readers hear what changed on its own (a refresh landing, a run settling).
export function announce(message) {
  const el = document.getElementById("announcer");
  if (!el) return;
  el.textContent = "";
  // A new text node in a later frame is read even when the message repeats.
  requestAnimationFrame(() => {
    el.textContent = message;
  });
}

// Instants are shown in UTC, as the API answers them, so two operators read the same text.
export function formatInstant(value) {
  if (!value) return "never";
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return `${d.toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

export function instant(value) {
  return value ? h("time", { datetime: value }, formatInstant(value)) : h("span", { class: "muted" }, "never");
}

export function money(amount, currency) {
  if (amount === null || amount === undefined) return h("span", { class: "muted" }, "—");
  return h("span", { class: "num" }, `${amount}${currency ? ` ${currency}` : ""}`);
}

export function badge(text, kind) {
  return h("span", { class: `badge badge-${kind}` }, text);
}

// A wide table scrolls inside its own region on a narrow screen; the region is focusable so
// a keyboard can scroll it.
export function tableRegion(label, table) {
  return h("div", { class: "table-wrap", role: "region", "aria-label": label, tabindex: "0" }, table);
}

export function errorPanel(message) {
  return h("div", { class: "alert alert-error", role: "alert" }, message);
}
