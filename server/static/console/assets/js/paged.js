// A table over a GraphQL connection, a page at a time: forward with the connection's
// endCursor, back through the cursors already seen.

import { ApiError } from "./api.js";
import { errorPanel, h, replace, tableRegion } from "./dom.js";

export const PAGE_SIZE = 20;

// columns: [{ label, cell: (node) => Node|string, numeric? }]
// load(first, after) -> { totalCount, pageInfo: { hasNextPage, endCursor }, nodes }
export function pagedTable({ label, columns, load, empty = "None.", pageSize = PAGE_SIZE, rowAttrs = null }) {
  const cursors = [null];
  let index = 0;
  const status = h("p", { class: "muted count", role: "status" }, "Loading…");
  const tbody = h("tbody");
  const table = h("table", {},
    h("caption", { class: "visually-hidden" }, label),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.numeric ? "num" : null }, c.label)))),
    tbody);
  const prev = h("button", { type: "button", class: "secondary", disabled: true }, "Previous page");
  const next = h("button", { type: "button", class: "secondary", disabled: true }, "Next page");
  const where = h("span", { class: "muted" });
  const pager = h("nav", { class: "pager", "aria-label": `${label}: pages` }, prev, where, next);
  const error = h("div");
  const root = h("div", { class: "paged" }, status, error, tableRegion(label, table), pager);
  let token = 0;

  async function show() {
    const mine = ++token;
    prev.disabled = true;
    next.disabled = true;
    try {
      const page = await load(pageSize, cursors[index]);
      if (mine !== token) return;
      replace(error);
      replace(tbody, page.nodes.length
        ? page.nodes.map((node) => h("tr", rowAttrs ? rowAttrs(node) : {},
          columns.map((c, i) => h(i === 0 ? "th" : "td", { scope: i === 0 ? "row" : null, class: c.numeric ? "num" : null }, c.cell(node)))))
        : h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty)));
      const first = index * pageSize + (page.nodes.length ? 1 : 0);
      status.textContent = `${page.totalCount} in all${page.nodes.length ? `, showing ${first}–${first + page.nodes.length - 1}` : ""}`;
      where.textContent = `Page ${index + 1} of ${Math.max(1, Math.ceil(page.totalCount / pageSize))}`;
      if (page.pageInfo.hasNextPage) cursors[index + 1] = page.pageInfo.endCursor;
      prev.disabled = index === 0;
      next.disabled = !page.pageInfo.hasNextPage;
    } catch (e) {
      if (mine !== token) return;
      status.textContent = "";
      replace(error, errorPanel(e instanceof ApiError ? e.message : String(e)));
      prev.disabled = index === 0;
    }
  }

  prev.addEventListener("click", () => {
    if (index > 0) {
      index -= 1;
      show();
    }
  });
  next.addEventListener("click", () => {
    if (cursors[index + 1] !== undefined) {
      index += 1;
      show();
    }
  });

  return {
    element: root,
    reload() {
      cursors.length = 1;
      index = 0;
      return show();
    },
    refresh: show,
  };
}
