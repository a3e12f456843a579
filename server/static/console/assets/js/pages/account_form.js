// New account and edit account: every field of createAccount / updateAccount, the Partner
// Account check box under "Additional fields", and the API's typed errors at their fields.

import { ApiError, gql } from "../api.js";
import { announce, h } from "../dom.js";
import { clearErrors, errorSummary, field, fieldset, showErrors, valueOf } from "../forms.js";

const CONTACT_FIELDS = [
  ["firstName", "First name", true],
  ["lastName", "Last name", true],
  ["workEmail", "Work email", false, "email"],
  ["workPhone", "Work phone", false, "tel"],
  ["address1", "Address line 1", false],
  ["address2", "Address line 2", false],
  ["city", "City", false],
  ["state", "State or region", false],
  ["postalCode", "Postal code", false],
  ["country", "Country", false],
];
const CONTACT = CONTACT_FIELDS.map(([name]) => name).join(" ");

const PAYMENT_TERMS = ["DUE_UPON_RECEIPT", "NET_15", "NET_30", "NET_45", "NET_60", "NET_90"];
const RESULT = `account { accountNumber } errors { __typename code message field }`;

function contactFields(prefix, contact) {
  return CONTACT_FIELDS.map(([name, label, required, type]) => field({
    label, path: `${prefix}.${name}`, type: type || "text", required, value: contact?.[name] ?? "",
  }));
}

function readContact(form, prefix) {
  const contact = {};
  for (const [name] of CONTACT_FIELDS) {
    const v = valueOf(form, `${prefix}.${name}`);
    contact[name] = v === "" ? null : v;
  }
  return contact;
}

function sameContact(a, b) {
  return CONTACT_FIELDS.every(([name]) => (a?.[name] ?? null) === (b?.[name] ?? null));
}

export async function newAccountPage(main) {
  return accountForm(main, null);
}

export async function editAccountPage(main, [number]) {
  const data = await gql(`query ConsoleAccountForm($n: String!) { account(accountNumber: $n) {
      accountNumber name currency status billCycleDay paymentTerm batch partnerAccount
      billToContact { ${CONTACT} } soldToContact { ${CONTACT} } } }`, { n: number });
  if (!data.account) {
    main.append(h("h1", { tabindex: "-1" }, "Account not found"), h("p", {}, h("a", { href: "#/accounts" }, "Back to accounts")));
    return undefined;
  }
  return accountForm(main, data.account);
}

function accountForm(main, account) {
  const editing = account !== null;
  const summary = errorSummary();
  const soldDiffers = editing && !sameContact(account.billToContact, account.soldToContact);
  const sameAsBill = field({ label: "Sold-to contact is the bill-to contact", path: "soldToSame", type: "checkbox", value: !soldDiffers });
  const soldFields = h("div", { class: "grid", hidden: !soldDiffers }, contactFields("soldToContact", editing ? account.soldToContact : null));
  sameAsBill.querySelector("input").addEventListener("change", (e) => {
    soldFields.hidden = e.target.checked;
    for (const control of soldFields.querySelectorAll("input")) control.disabled = e.target.checked;
  });
  for (const control of soldFields.querySelectorAll("input")) control.disabled = !soldDiffers;

  const submit = h("button", { type: "submit" }, editing ? "Save changes" : "Create account");
  const form = h("form", { class: "account-form", novalidate: true },
    summary,
    fieldset("Account",
      editing
        ? field({ label: "Account number", path: "accountNumber", value: account.accountNumber, attrs: { readonly: true } })
        : field({ label: "Account number", path: "accountNumber", hint: "Leave empty to have one assigned." }),
      field({ label: "Name", path: "name", required: true, value: account?.name ?? "" }),
      editing
        ? field({ label: "Currency", path: "currency", value: account.currency, attrs: { readonly: true }, hint: "A currency never changes." })
        : field({ label: "Currency", path: "currency", required: true, value: "USD", hint: "ISO code, such as USD or EUR.",
                  attrs: { maxlength: "3", autocapitalize: "characters" } }),
      editing
        ? field({ label: "Status", path: "status", value: account.status, options: [["ACTIVE", "Active"], ["CANCELED", "Canceled"]] })
        : null),
    fieldset("Billing",
      field({ label: "Bill cycle day", path: "billCycleDay", type: "number", value: account?.billCycleDay ?? 1,
              hint: "1 to 31; 31 bills at month end.", attrs: { min: "1", max: "31", inputmode: "numeric" } }),
      field({ label: "Payment term", path: "paymentTerm", value: account?.paymentTerm ?? "DUE_UPON_RECEIPT",
              options: PAYMENT_TERMS.map((t) => [t, t.replaceAll("_", " ").toLowerCase().replace(/^./, (c) => c.toUpperCase())]) }),
      field({ label: "Batch", path: "batch", value: account?.batch ?? "Batch1", hint: "Bill runs can select accounts by batch." })),
    fieldset("Additional fields",
      field({ label: "Partner Account", path: "partnerAccount", type: "checkbox", value: account?.partnerAccount ?? false,
              hint: "Writes never wait for this account's lock; its metrics are computed by the periodic refresh. "
                + "Use it for resellers and their end customers with many parallel orders." }),
      editing ? null : field({ label: "Idempotency key", path: "idempotencyKey",
                               hint: "Optional: sending the same key again answers the first result instead of creating twice." })),
    fieldset("Bill-to contact", contactFields("billToContact", account?.billToContact)),
    h("fieldset", {}, h("legend", {}, "Sold-to contact"), sameAsBill, soldFields),
    h("div", { class: "actions" },
      submit,
      h("a", { class: "button secondary", href: editing ? `#/accounts/${encodeURIComponent(account.accountNumber)}` : "#/accounts" }, "Cancel")),
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form, summary);
    const input = editing ? updateInput(form, account) : createInput(form);
    submit.disabled = true;
    submit.setAttribute("aria-busy", "true");
    try {
      const data = editing
        ? await gql(`mutation ConsoleUpdateAccount($input: UpdateAccountInput!) { updateAccount(input: $input) { ${RESULT} } }`, { input })
        : await gql(`mutation ConsoleCreateAccount($input: CreateAccountInput!) { createAccount(input: $input) { ${RESULT} } }`, { input });
      const payload = editing ? data.updateAccount : data.createAccount;
      if (showErrors(form, summary, payload.errors)) return;
      announce(editing ? "Account saved." : "Account created.");
      window.location.hash = `#/accounts/${encodeURIComponent(payload.account.accountNumber)}`;
    } catch (e) {
      // A request the API refused as a whole (an unreadable value, say) names the field in
      // its extensions when it can.
      showErrors(form, summary, e instanceof ApiError && e.errors.length ? e.errors : [{ message: String(e.message || e) }]);
    } finally {
      submit.disabled = false;
      submit.removeAttribute("aria-busy");
    }
  });

  main.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/accounts" }, "Accounts"), " / ", editing ? account.accountNumber : "New"),
    h("h1", { tabindex: "-1" }, editing ? `Edit ${account.name}` : "New account"),
    h("p", { class: "muted" }, "Fields marked * are required."),
    form);
  return undefined;
}

function intOrNull(v) {
  return v === "" ? null : Number(v);
}

function createInput(form) {
  const input = {
    name: valueOf(form, "name"),
    currency: valueOf(form, "currency").toUpperCase(),
    billToContact: readContact(form, "billToContact"),
    partnerAccount: valueOf(form, "partnerAccount"),
    paymentTerm: valueOf(form, "paymentTerm"),
  };
  const number = valueOf(form, "accountNumber");
  if (number) input.accountNumber = number;
  const day = intOrNull(valueOf(form, "billCycleDay"));
  if (day !== null) input.billCycleDay = day;
  const batch = valueOf(form, "batch");
  if (batch) input.batch = batch;
  if (!valueOf(form, "soldToSame")) input.soldToContact = readContact(form, "soldToContact");
  const key = valueOf(form, "idempotencyKey");
  if (key) input.idempotencyKey = key;
  return input;
}

// Only what changed: updateAccount leaves a field it is not sent as it is.
function updateInput(form, account) {
  const input = { accountNumber: account.accountNumber };
  const name = valueOf(form, "name");
  if (name !== account.name) input.name = name;
  const day = intOrNull(valueOf(form, "billCycleDay"));
  if (day !== account.billCycleDay) input.billCycleDay = day;
  for (const key of ["paymentTerm", "batch", "status"]) {
    const v = valueOf(form, key);
    if (v !== account[key]) input[key] = v;
  }
  const partner = valueOf(form, "partnerAccount");
  if (partner !== account.partnerAccount) input.partnerAccount = partner;
  const bill = readContact(form, "billToContact");
  if (!sameContact(bill, account.billToContact)) input.billToContact = bill;
  const sold = valueOf(form, "soldToSame") ? bill : readContact(form, "soldToContact");
  if (!sameContact(sold, account.soldToContact)) input.soldToContact = sold;
  return input;
}
