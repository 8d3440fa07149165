// Small building blocks of the pages. Text from the API is always set as text, never as HTML.

import { Exact } from "./api.js";

let uniqueId = 0;

// h("button", {type: "button", onclick}, "Save") — attributes starting with "on" are listeners.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

// Replaces an element's children; like `h`, it skips null, undefined and false (the DOM's own
// replaceChildren would show them as text).
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null) element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

export function nextId(prefix) {
  uniqueId += 1;
  return `${prefix}-${uniqueId}`;
}

// A labelled control with room for its error. `field` is the name the API uses in a problem's
// `field` for this control (a prefix matches deeper names: "labelGroups" takes
// "labelGroups[1].includeLabels").
export function field(label, control, { field: apiField, hint } = {}) {
  control.id ||= nextId("field");
  if (apiField) control.dataset.field = apiField;
  const hintId = hint ? `${control.id}-hint` : null;
  if (hintId) control.setAttribute("aria-describedby", hintId);
  return h(
    "div",
    { class: "field" },
    h("label", { for: control.id }, label),
    control,
    hint ? h("small", { id: hintId, class: "hint" }, hint) : null,
  );
}

export function select(options, value) {
  const element = h("select");
  for (const option of options) {
    const [optionValue, text] = Array.isArray(option) ? option : [option, option];
    element.append(h("option", { value: optionValue, selected: optionValue === value }, text));
  }
  return element;
}

// Clears the errors a form shows.
export function clearErrors(form) {
  for (const e of form.querySelectorAll(".field-error, .form-error")) e.remove();
  for (const c of form.querySelectorAll("[aria-invalid]")) c.removeAttribute("aria-invalid");
}

// Shows an API refusal: beside the control the problem's `field` names, else at the top of the
// form. Focus goes to the control at fault.
export function showError(form, error) {
  clearErrors(form);
  const message = error.message || String(error);
  const controls = [...form.querySelectorAll("[data-field]")];
  const name = error.field;
  const exact = name && controls.find((c) => c.dataset.field === name);
  const prefix =
    name &&
    controls
      .filter((c) => name.startsWith(c.dataset.field + ".") || name.startsWith(c.dataset.field + "[") || name.startsWith(c.dataset.field + "/"))
      .sort((a, b) => b.dataset.field.length - a.dataset.field.length)[0];
  const control = exact || prefix;
  if (control) {
    const id = `${control.id}-error`;
    control.setAttribute("aria-invalid", "true");
    const described = (control.getAttribute("aria-describedby") || "").split(" ").filter((x) => x && x !== id);
    control.setAttribute("aria-describedby", [...described, id].join(" "));
    // The API's detail names the field already ("threshold must have at most 2 decimals").
    const text = message.startsWith(name) ? message : `${name}: ${message}`;
    control.insertAdjacentElement("afterend", h("p", { id, class: "field-error" }, text));
    control.focus();
  } else {
    form.prepend(h("p", { class: "form-error", role: "alert" }, message));
  }
}

// A message for the whole page: errors as alerts, the rest politely.
export function announce(text, { error = false } = {}) {
  const status = document.getElementById("status");
  fill(status, error ? h("p", { role: "alert", class: "error" }, text) : h("p", {}, text));
  if (!error) {
    const shown = status.firstChild;
    setTimeout(() => shown.isConnected && shown.remove(), 6000);
  }
}

export function errorBox(error) {
  return h("p", { role: "alert", class: "error" }, error.message || String(error));
}

export function formatDateTime(text) {
  if (!text) return "—";
  const date = new Date(text);
  if (Number.isNaN(date.getTime())) return text;
  return date.toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

// Parameters and metadata as a person reads them: `threshold: 5000.00; accountType: checking`.
// (Not JSON.stringify: exact amounts are kept as text and would show up quoted.)
export function describe(value) {
  const isRecord = (v) => v && typeof v === "object" && !Array.isArray(v) && !(v instanceof Exact);
  if (Array.isArray(value)) return `[${value.map((v) => (isRecord(v) ? `{${describe(v)}}` : describe(v))).join(", ")}]`;
  if (isRecord(value)) {
    return Object.entries(value)
      .map(([key, inner]) => `${key}: ${isRecord(inner) ? `{${describe(inner)}}` : describe(inner)}`)
      .join("; ");
  }
  return String(value);
}

export function formatMoney(value) {
  if (value === undefined || value === null) return "—";
  const text = String(value);
  const [whole, fraction = ""] = text.replace(/^-/, "").split(".");
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return (text.startsWith("-") ? "−" : "") + grouped + "." + (fraction + "00").slice(0, Math.max(2, fraction.length));
}

// "Previous page / Page X of Y / Next page"; `go(page)` loads a page.
export function pager(page, totalPages, go) {
  const last = Math.max(1, totalPages);
  return h(
    "div",
    { class: "pager" },
    h("button", { type: "button", disabled: page <= 1, onclick: () => go(page - 1) }, "Previous page"),
    h("span", { "aria-live": "polite" }, `Page ${page} of ${last}`),
    h("button", { type: "button", disabled: page >= last, onclick: () => go(page + 1) }, "Next page"),
  );
}

export function table(caption, headers, rows) {
  return h(
    "table",
    {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "empty" }, "Nothing to show."))),
  );
}

// Asks before something that cannot be undone. Resolves to true when confirmed.
export function confirm(question, confirmText) {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { "aria-labelledby": "confirm-question" },
      h("p", { id: "confirm-question" }, question),
      h(
        "form",
        { method: "dialog", class: "actions" },
        h("button", { value: "cancel", type: "submit", autofocus: true }, "Cancel"),
        h("button", { value: "confirm", type: "submit", class: "danger" }, confirmText),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "confirm");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

// Lines of a textarea, trimmed, without empty ones.
export function lines(text) {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
}

// Saves a blob as a file through a temporary link.
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
