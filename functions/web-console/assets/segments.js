// Managed segments: the list with filters and paging, one segment with its members, the forms to
// create and edit, deletion with confirmation, and the refresh of a segment with a rule.

import { STATUS_CODES, SEGMENT_TYPES, typeTitle } from "./api.js";
import { announce, clearErrors, confirm, describe, errorBox, field, formatDateTime, h, lines, pager, select, showError, table, fill } from "./ui.js";

const PAGE_SIZE = 10;
const MEMBERS_PAGE_SIZE = 20;
const RULE_TYPES = SEGMENT_TYPES.filter((t) => t.id !== "financialBreakdown");

// The list's filters survive a visit to a segment and back.
const filters = { level: "organization", ledger: "", status: "", key: "", value: "", from: "", to: "", page: 1 };

function base(mandator, ledger) {
  const organization = `/v1/organizations/${encodeURIComponent(mandator)}`;
  return ledger ? `${organization}/ledgers/${encodeURIComponent(ledger)}` : organization;
}

function segmentHash(segment) {
  return segment.ledgerId
    ? `#/ledgers/${encodeURIComponent(segment.ledgerId)}/segments/${encodeURIComponent(segment.id)}`
    : `#/segments/${encodeURIComponent(segment.id)}`;
}

// JSON typed by a person, numbers kept exactly as written (so 100.50 stays 100.50).
function parseExact(text) {
  return JSON.parse(text, (_key, value, context) =>
    typeof value === "number" && context?.source && JSON.rawJSON ? JSON.rawJSON(context.source) : value,
  );
}

function jsonArea(value, rows = 4) {
  return h("textarea", { rows, spellcheck: "false" }, value === undefined ? "" : JSON.stringify(value, null, 2));
}

// Reads a JSON textarea; a text that is not JSON is shown as that field's error.
function readJson(control, apiField, empty) {
  const text = control.value.trim();
  if (!text) return empty;
  try {
    return parseExact(text);
  } catch (e) {
    const error = new Error("is not valid JSON");
    error.field = apiField;
    throw error;
  }
}

export async function segmentsPage(context) {
  const { api, mandator, main } = context;
  const level = select([["organization", "Organization"], ["ledger", "Ledger"]], filters.level);
  const ledger = h("input", { type: "text", value: filters.ledger, autocomplete: "off" });
  const ledgerField = field("Ledger id", ledger, { field: "ledgerId" });
  ledgerField.hidden = filters.level !== "ledger";
  level.addEventListener("change", () => {
    ledgerField.hidden = level.value !== "ledger";
  });
  const status = select([["", "Any"], ...STATUS_CODES], filters.status);
  const key = h("input", { type: "text", value: filters.key, autocomplete: "off" });
  const value = h("input", { type: "text", value: filters.value, autocomplete: "off" });
  const from = h("input", { type: "date", value: filters.from });
  const to = h("input", { type: "date", value: filters.to });
  const filterForm = h(
    "form",
    { class: "filters", "aria-label": "Filters" },
    field("Level", level),
    ledgerField,
    field("Status filter", status, { field: "status" }),
    field("Metadata key", key, { field: "metadata" }),
    field("Metadata value", value),
    field("Created from", from, { field: "start_date" }),
    field("Created to", to, { field: "end_date" }),
    h("button", { type: "submit" }, "Apply filters"),
  );
  const results = h("div", { class: "results" });
  const newButton = h("button", { type: "button", class: "primary", onclick: () => showCreate() }, "New segment");
  const formSlot = h("div");
  fill(main,
    h("div", { class: "title-row" }, h("h1", {}, "Segments"), newButton),
    formSlot,
    filterForm,
    results,
  );

  async function load() {
    clearErrors(filterForm);
    const ledgerId = filters.level === "ledger" ? filters.ledger.trim() : "";
    if (filters.level === "ledger" && !ledgerId) {
      showError(filterForm, Object.assign(new Error("is required for the ledger level"), { field: "ledgerId" }));
      fill(results);
      return;
    }
    const query = { limit: PAGE_SIZE, page: filters.page, sort_order: "desc", status: filters.status };
    if (filters.from || filters.to) Object.assign(query, { start_date: filters.from, end_date: filters.to });
    if (filters.key.trim()) query[`metadata.${filters.key.trim()}`] = filters.value;
    fill(results, h("p", { class: "loading" }, "Loading segments…"));
    try {
      const page = await api.get(`${base(mandator, ledgerId)}/segments`, query);
      const totalPages = Math.ceil(page.totalCount / PAGE_SIZE);
      const rows = page.items.map((s) =>
        h(
          "tr",
          {},
          h("td", {}, h("a", { href: segmentHash(s) }, s.name)),
          h("td", {}, h("span", { class: `badge ${s.status.code.toLowerCase()}` }, s.status.code)),
          h("td", { class: "number" }, s.memberCount ?? 0),
          h("td", {}, formatDateTime(s.createdAt)),
        ),
      );
      fill(results,
        h("p", { id: "segments-total" }, `${page.totalCount} segment${page.totalCount === 1 ? "" : "s"} in total`),
        table("Segments", ["Name", "Status", "Members", "Created"], rows),
        pager(filters.page, totalPages, (p) => {
          filters.page = p;
          load();
        }),
      );
    } catch (error) {
      if (error.field) showError(filterForm, error);
      fill(results, errorBox(error));
    }
  }

  filterForm.addEventListener("submit", (event) => {
    event.preventDefault();
    Object.assign(filters, {
      level: level.value,
      ledger: ledger.value,
      status: status.value,
      key: key.value,
      value: value.value,
      from: from.value,
      to: to.value,
      page: 1,
    });
    load();
  });

  function showCreate() {
    const ledgerId = filters.level === "ledger" ? filters.ledger.trim() : "";
    const form = segmentForm({
      heading: ledgerId ? `New segment in ledger ${ledgerId}` : "New segment",
      submitText: "Create segment",
      withRule: true,
      onCancel: () => fill(formSlot),
      onSubmit: async (body) => {
        const answer = await api.call("POST", `${base(mandator, ledgerId)}/segments`, { body }, [201]);
        announce(`Segment ${answer.data.name} created.`);
        window.location.hash = segmentHash(answer.data);
      },
    });
    fill(formSlot, form);
    form.querySelector("input").focus();
  }

  await load();
}

// The create and edit form. `segment` prefills it for editing; the rule is set at creation.
function segmentForm({ heading, submitText, segment, withRule, onSubmit, onCancel }) {
  const name = h("input", { type: "text", value: segment?.name ?? "", maxlength: 256, required: true, autocomplete: "off" });
  // A code set through the API beyond the four with a meaning stays selectable, so saving an
  // edit never changes it unasked.
  const current = segment?.status?.code ?? "ACTIVE";
  const statusCode = select(STATUS_CODES.includes(current) ? STATUS_CODES : [...STATUS_CODES, current], current);
  const statusDescription = h("input", { type: "text", value: segment?.status?.description ?? "", maxlength: 256 });
  const metadata = jsonArea(segment?.metadata ?? undefined);
  metadata.placeholder = '{"tier": "gold"}';
  const ruleType = select([["", "No rule"], ...RULE_TYPES.map((t) => [t.id, t.title])], "");
  const ruleParameters = h("textarea", { rows: 4, spellcheck: "false", placeholder: '{"accountType": "checking", "threshold": 5000}' });
  const headingId = `${submitText.replace(/\s+/g, "-").toLowerCase()}-heading`;
  const form = h(
    "form",
    { class: "card", "aria-labelledby": headingId },
    h("h2", { id: headingId }, heading),
    field("Name", name, { field: "name" }),
    field("Status", statusCode, { field: "status.code" }),
    field("Status description", statusDescription, { field: "status.description" }),
    field("Metadata (JSON)", metadata, { field: "metadata", hint: "A flat object: text, number or true/false values." + (segment ? " A key left out is removed." : "") }),
    withRule ? field("Rule type", ruleType, { field: "rule.segmentType" }) : null,
    withRule
      ? field("Rule parameters (JSON)", ruleParameters, {
          field: "rule.parameters",
          hint: "The body of a job of that type; a refresh makes the accounts of its result the members.",
        })
      : null,
    h(
      "div",
      { class: "actions" },
      h("button", { type: "submit", class: "primary" }, submitText),
      h("button", { type: "button", onclick: onCancel }, "Cancel"),
    ),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      const body = { name: name.value, status: { code: statusCode.value } };
      if (statusDescription.value.trim() || segment?.status?.description) {
        body.status.description = statusDescription.value.trim() || null;
      }
      const entered = readJson(metadata, "metadata", {});
      if (segment) {
        // PATCH merges metadata: keys that were removed from the text are sent as null.
        const merged = { ...entered };
        for (const old of Object.keys(segment.metadata ?? {})) if (!(old in entered)) merged[old] = null;
        body.metadata = merged;
      } else {
        body.metadata = entered;
      }
      if (withRule && ruleType.value) {
        body.rule = { segmentType: ruleType.value, parameters: readJson(ruleParameters, "rule.parameters", {}) };
      }
      clearErrors(form);
      await onSubmit(body);
    } catch (error) {
      showError(form, error);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

// The schedule as the API shows it: {"every": "day"|"week"|"month", "on": weekday or day, "at": "HH:MM"} (UTC).
function describeSchedule(schedule) {
  if (!schedule) return "None";
  const on = schedule.every === "week" ? ` on ${schedule.on ?? "monday"}` : schedule.every === "month" ? ` on day ${schedule.on ?? 1}` : "";
  return `Every ${schedule.every}${on} at ${schedule.at} UTC`;
}

function describeRule(rule) {
  if (!rule) return "None";
  return `${typeTitle(rule.segmentType)} — ${describe(rule.parameters ?? {})}`;
}

// A refresh in these states is still on its way; APPLIED and FAILED are final.
const REFRESH_IN_FLIGHT = ["PENDING", "DIFFING", "APPLYING"];

function describeRefresh(refresh, type) {
  if (!refresh) return "Never refreshed";
  const parts = [refresh.status, `requested ${formatDateTime(refresh.requestedAt)}`];
  // The counts are known once the difference is recorded (from APPLYING on).
  if (!["PENDING", "DIFFING"].includes(refresh.status)) parts.push(`${refresh.entered ?? 0} entered, ${refresh.left ?? 0} left`);
  if (refresh.finishedAt) parts.push(`finished ${formatDateTime(refresh.finishedAt)}`);
  if (refresh.error) parts.push(refresh.error);
  return h(
    "span",
    {},
    parts.join(" · "),
    refresh.jobId && type ? [" · ", h("a", { href: `#/jobs/${type}/${refresh.jobId}` }, "the job's result")] : null,
  );
}

export async function segmentPage(context, { id, ledger }) {
  const { api, mandator, main, onLeave } = context;
  const path = `${base(mandator, ledger)}/segments/${encodeURIComponent(id)}`;
  const back = h("p", {}, h("a", { href: "#/segments" }, "← All segments"));
  fill(main, back, h("p", { class: "loading" }, "Loading the segment…"));
  let segment;
  try {
    segment = await api.get(path);
  } catch (error) {
    fill(main, back, h("h1", {}, "Segment"), errorBox(error));
    return;
  }
  const details = h("dl", { class: "details" });
  const actions = h("div", { class: "actions" });
  const formSlot = h("div");
  const members = h("section", { "aria-labelledby": "members-heading" });
  let timer = null;
  onLeave(() => clearTimeout(timer));

  function render() {
    const type = segment.rule?.segmentType;
    fill(details,
      ...[
        ["Status", `${segment.status.code}${segment.status.description ? ` — ${segment.status.description}` : ""}`],
        ["Level", segment.ledgerId ? `Ledger ${segment.ledgerId}` : "Organization"],
        ["Metadata", Object.keys(segment.metadata ?? {}).length ? describe(segment.metadata) : "None"],
        ["Rule", describeRule(segment.rule)],
        ["Members", String(segment.memberCount ?? 0)],
        ["Created", formatDateTime(segment.createdAt)],
        ["Updated", formatDateTime(segment.updatedAt)],
        ["Last refresh", describeRefresh(segment.lastRefresh, type)],
        ...(segment.rule
          ? [
              ["Refresh schedule", describeSchedule(segment.refresh)],
              ["Next refresh", segment.nextRefreshAt ? formatDateTime(segment.nextRefreshAt) : "Not scheduled"],
            ]
          : []),
      ].flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
    );
    fill(actions,
      h("button", { type: "button", onclick: edit }, "Edit"),
      segment.rule ? h("button", { type: "button", onclick: refresh }, "Refresh now") : null,
      h("button", { type: "button", class: "danger", onclick: remove }, "Delete"),
    );
    main.querySelector("h1").textContent = segment.name;
    const live = REFRESH_IN_FLIGHT.includes(segment.lastRefresh?.status);
    clearTimeout(timer);
    // The service applies a refresh once its job completes: follow it until it is final.
    if (live) timer = setTimeout(reload, 2000);
  }

  async function reload() {
    try {
      segment = await api.get(path);
      render();
      await loadMembers(currentPage);
    } catch (error) {
      announce(error.message, { error: true });
    }
  }

  function edit() {
    const form = segmentForm({
      heading: `Edit ${segment.name}`,
      submitText: "Save changes",
      segment,
      withRule: false,
      onCancel: () => fill(formSlot),
      onSubmit: async (body) => {
        const answer = await api.call("PATCH", path, { body });
        segment = answer.data;
        fill(formSlot);
        render();
        announce("Changes saved.");
      },
    });
    fill(formSlot, form);
    form.querySelector("input").focus();
  }

  async function refresh() {
    try {
      const answer = await api.call("POST", `${path}/refresh`, {}, [200, 202]);
      segment = answer.data;
      render();
      announce("Refresh started.");
    } catch (error) {
      announce(error.message, { error: true });
    }
  }

  async function remove() {
    if (!(await confirm(`Delete segment ${segment.name}?`, "Delete segment"))) return;
    try {
      await api.call("DELETE", path, {}, [204]);
      announce(`Segment ${segment.name} deleted.`);
      window.location.hash = "#/segments";
    } catch (error) {
      announce(error.message, { error: true });
    }
  }

  let currentPage = 1;
  const add = h("textarea", { rows: 3, spellcheck: "false" });
  const drop = h("textarea", { rows: 3, spellcheck: "false" });
  const membershipForm = h(
    "form",
    { class: "card", "aria-label": "Change members" },
    h("h3", {}, "Change members"),
    h("div", { class: "two" }, field("Accounts to add (one per line)", add, { field: "add" }), field("Accounts to remove (one per line)", drop, { field: "remove" })),
    h("button", { type: "submit", class: "primary" }, "Apply membership changes"),
  );
  membershipForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(membershipForm);
    try {
      await api.call("PUT", `${path}/accounts`, { body: { add: lines(add.value), remove: lines(drop.value) } });
      add.value = "";
      drop.value = "";
      announce("Membership changed.");
      await reload();
    } catch (error) {
      showError(membershipForm, error);
    }
  });
  const memberList = h("div");

  async function loadMembers(page) {
    currentPage = page;
    try {
      const answer = await api.get(`${path}/accounts`, { limit: MEMBERS_PAGE_SIZE, page });
      fill(memberList,
        table(
          "Members",
          ["Account", "User"],
          answer.items.map((m) => h("tr", {}, h("td", {}, m.accountId), h("td", {}, m.userId))),
        ),
        pager(page, Math.ceil(answer.totalCount / MEMBERS_PAGE_SIZE), loadMembers),
      );
    } catch (error) {
      fill(memberList, errorBox(error));
    }
  }

  fill(members, h("h2", { id: "members-heading" }, "Members"), memberList, membershipForm);
  fill(main, back, h("h1", {}, segment.name), details, actions, formSlot, members);
  render();
  await loadMembers(1);
}
