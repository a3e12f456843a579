// Import files read in the browser with the columns and rules of `partnerbill import`
// (server/importer.py): CSV or JSON Lines, the row numbers, the derived idempotency keys and
// the failed-rows file. The keys are derived the way the command derives them, so a file sent
// once through the console and again through the command (or the other way) writes nothing
// twice.

export const ROW_COLUMN = "_row";
export const ERROR_COLUMN = "_errors";
const FAILED_SUFFIX = ".failed";

// How each kind of row is sent: the bulk mutation, its input type and list, and the number
// read back from the written document.
export const KINDS = {
  invoices: { label: "Invoices", mutation: "createStandaloneInvoices", inputType: "CreateStandaloneInvoiceInput",
              rowsField: "invoices", resultField: "invoice", numberField: "invoiceNumber" },
  payments: { label: "Payments", mutation: "createPayments", inputType: "CreatePaymentInput",
              rowsField: "payments", resultField: "payment", numberField: "paymentNumber" },
  "credit-memos": { label: "Credit memos", mutation: "createCreditMemos", inputType: "CreateCreditMemoInput",
                    rowsField: "creditMemos", resultField: "creditMemo", numberField: "memoNumber" },
  "debit-memos": { label: "Debit memos", mutation: "createDebitMemos", inputType: "CreateDebitMemoInput",
                   rowsField: "debitMemos", resultField: "debitMemo", numberField: "memoNumber" },
};

export function bulkDocument(kind) {
  const k = KINDS[kind];
  return `mutation ConsoleImport($rows: [${k.inputType}!]!, $dryRun: Boolean!) {
    ${k.mutation}(input: { ${k.rowsField}: $rows, errorPolicy: REJECT_FAILED_ROWS, dryRun: $dryRun }) {
      count results { ${k.resultField} { ${k.numberField} } errors { code message field retryable } } } }`;
}

// CSV columns of each kind (README, "Migrating data"); an empty cell is left out of the input.
const INVOICE_COLUMNS = ["accountNumber", "invoiceNumber", "invoiceDate", "dueDate", "status", "currency", "idempotencyKey"];
const ITEM_COLUMNS = ["chargeName", "quantity", "unitPrice", "amount", "serviceStartDate", "serviceEndDate"];
const PAYMENT_COLUMNS = ["accountNumber", "amount", "effectiveDate", "method", "currency", "reference", "idempotencyKey"];
const APPLICATION_COLUMNS = ["invoiceNumber", "debitMemoNumber", "appliedAmount"];
const MEMO_COLUMNS = ["accountNumber", "invoiceNumber", "amount", "reasonCode", "memoDate", "autoPost", "idempotencyKey"];
export const CSV_COLUMNS = {
  invoices: [...INVOICE_COLUMNS, ...ITEM_COLUMNS],
  payments: [...PAYMENT_COLUMNS, ...APPLICATION_COLUMNS],
  "credit-memos": MEMO_COLUMNS,
  "debit-memos": MEMO_COLUMNS,
};

export class ImportFileError extends Error {}

export function fileFormat(name) {
  const lower = name.toLowerCase();
  if (lower.endsWith(".jsonl") || lower.endsWith(".ndjson")) return "jsonl";
  if (lower.endsWith(".csv")) return "csv";
  throw new ImportFileError(`${name}: choose a .csv or .jsonl file`);
}

function suffix(name) {
  const dot = name.lastIndexOf(".");
  return dot > 0 ? name.slice(dot) : "";
}

// The prefix of derived keys: the file's name without its extension and without the
// failed-rows suffix, so a failed-rows file derives the keys its rows had.
export function keyPrefix(name) {
  const ext = suffix(name);
  const stem = ext ? name.slice(0, -ext.length) : name;
  return stem.endsWith(FAILED_SUFFIX) ? stem.slice(0, -FAILED_SUFFIX.length) : stem;
}

export function failedName(name) {
  return `${keyPrefix(name)}${FAILED_SUFFIX}${suffix(name)}`;
}

// -- CSV, as Python's csv module reads it (comma, double quotes, quotes doubled inside) -----

export function parseCsv(text) {
  const records = [];
  let record = [];
  let value = "";
  let quoted = false; // inside a quoted part of the value
  let touched = false; // the record has begun (an empty line is no record)
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          value += '"';
          i += 1;
        } else {
          quoted = false;
        }
      } else {
        value += c;
      }
      continue;
    }
    if (c === '"' && value === "") {
      quoted = true;
      touched = true;
    } else if (c === ",") {
      record.push(value);
      value = "";
      touched = true;
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i += 1;
      if (touched || value) {
        record.push(value);
        records.push(record);
      }
      record = [];
      value = "";
      touched = false;
    } else {
      value += c;
      touched = true;
    }
  }
  if (touched || value) {
    record.push(value);
    records.push(record);
  }
  return records;
}

function cells(line, columns) {
  const out = {};
  for (const c of columns) {
    const value = (line[c] || "").trim();
    if (value) out[c] = c === "autoPost" ? value === "true" : value;
  }
  return out;
}

function csvRows(kind, text, name) {
  const [header = [], ...records] = parseCsv(text);
  const known = new Set([...CSV_COLUMNS[kind], ROW_COLUMN, ERROR_COLUMN]);
  const unknown = header.filter((c) => !known.has(c));
  if (unknown.length) {
    throw new ImportFileError(`${name}: unknown column(s) ${unknown.join(", ")}; ${kind} takes ${CSV_COLUMNS[kind].join(", ")}`);
  }
  const rows = [];
  let pending = null;
  records.forEach((record, index) => {
    const line = {};
    header.forEach((column, i) => {
      line[column] = record[i] ?? "";
    });
    const given = line[ROW_COLUMN] || "";
    const number = /^[0-9]+$/.test(given) ? Number(given) : index + 1;
    if (kind === "invoices") {
      const item = cells(line, ITEM_COLUMNS);
      const head = cells(line, INVOICE_COLUMNS);
      // Consecutive lines with the same invoiceNumber are the items of one invoice.
      if (pending && head.invoiceNumber && pending.input.invoiceNumber === head.invoiceNumber) {
        pending.input.items.push(item);
        pending.lines.push(line);
        return;
      }
      if (pending) rows.push(pending);
      pending = { number, input: { ...head, items: [item] }, lines: [line] };
      return;
    }
    if (kind === "payments") {
      const input = cells(line, PAYMENT_COLUMNS);
      const target = cells(line, APPLICATION_COLUMNS);
      // One application per line; an empty appliedAmount is sent as null, as the command does.
      const applied = target.appliedAmount ?? null;
      if (target.invoiceNumber) input.invoices = [{ invoiceNumber: target.invoiceNumber, amount: applied }];
      if (target.debitMemoNumber) input.debitMemos = [{ memoNumber: target.debitMemoNumber, amount: applied }];
      rows.push({ number, input, lines: [line] });
      return;
    }
    rows.push({ number, input: cells(line, MEMO_COLUMNS), lines: [line] });
  });
  if (pending) rows.push(pending);
  return rows;
}

// -- JSON Lines: the mutation's input object, one per line --------------------------------

function jsonlRows(text, name) {
  const rows = [];
  // Lines end as Python's universal newlines end them.
  const lines = text.split(/\r\n|\r|\n/);
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  lines.forEach((raw, index) => {
    const lineNumber = index + 1;
    if (!raw.trim()) return;
    let obj;
    try {
      obj = JSON.parse(raw);
    } catch (e) {
      throw new ImportFileError(`${name} line ${lineNumber}: not JSON (${e.message})`);
    }
    if (!obj || typeof obj !== "object" || Array.isArray(obj)) {
      throw new ImportFileError(`${name} line ${lineNumber}: a JSON object per line, please`);
    }
    const given = Object.hasOwn(obj, ROW_COLUMN) ? obj[ROW_COLUMN] : lineNumber;
    delete obj[ROW_COLUMN];
    delete obj[ERROR_COLUMN];
    rows.push({ number: Number.isInteger(given) ? given : lineNumber, input: obj, lines: null });
  });
  return rows;
}

// -- derived keys --------------------------------------------------------------------------

// JSON as Python's json.dumps(sort_keys=True, separators=(",", ":")) writes it: keys sorted,
// no spaces, everything outside printable ASCII escaped as \uXXXX.
export function canonicalJson(value) {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${asciiJson(k)}:${canonicalJson(value[k])}`).join(",")}}`;
  }
  if (typeof value === "string") return asciiJson(value);
  return JSON.stringify(value);
}

function asciiJson(text) {
  return JSON.stringify(text).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

export async function derivedKey(prefix, kind, number, input) {
  const data = new TextEncoder().encode(`${prefix}\0${kind}\0${number}\0${canonicalJson(input)}`);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  const hex = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  return `import:${hex.slice(0, 48)}`;
}

// The file's rows, each with its idempotency key: its own, or one derived from the file's
// name, the row's number and its content.
export async function readRows(kind, name, text) {
  const format = fileFormat(name);
  if (!KINDS[kind]) throw new ImportFileError(`unknown kind ${kind}`);
  const rows = format === "csv" ? csvRows(kind, text, name) : jsonlRows(text, name);
  const prefix = keyPrefix(name);
  for (const row of rows) {
    if (!row.input.idempotencyKey) row.input.idempotencyKey = await derivedKey(prefix, kind, row.number, row.input);
  }
  return { format, rows };
}

// -- the failed-rows file -------------------------------------------------------------------

export function errorText(errors) {
  return errors.map((e) => `${e.code}${e.field && e.field.length ? ` at ${e.field.join(".")}` : ""}: ${e.message}`).join("; ");
}

function csvValue(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

const isDerived = (name, value) => name === "idempotencyKey" && typeof value === "string" && value.startsWith("import:");

// Refused rows in the input's format, with their original numbers and errors: the lines as
// read for CSV (a derived key is derived again from the row number), the input without its
// derived key for JSON Lines.
export function failedFile(kind, format, failures) {
  if (format === "csv") {
    const columns = [...CSV_COLUMNS[kind], ROW_COLUMN, ERROR_COLUMN];
    const out = [columns.join(",")];
    for (const { row, errors } of failures) {
      const message = errorText(errors);
      for (const line of row.lines) {
        out.push(columns.map((c) => csvValue(c === ROW_COLUMN ? row.number : c === ERROR_COLUMN ? message : line[c])).join(","));
      }
    }
    return `${out.join("\n")}\n`;
  }
  return failures.map(({ row, errors }) => {
    const given = Object.fromEntries(Object.entries(row.input).filter(([k, v]) => !isDerived(k, v)));
    return `${JSON.stringify({ ...given, [ROW_COLUMN]: row.number, [ERROR_COLUMN]: errors })}\n`;
  }).join("");
}
