// Financial segments: a form per segment type, the mandator's jobs updating live, and a job's
// result with paging, charts and the export download.

import { ACCOUNT_TYPES, SEGMENT_TYPES, literal, typeTitle } from "./api.js";
import { barChart, histogram } from "./charts.js";
import { announce, clearErrors, describe, errorBox, field, formatDateTime, formatMoney, h, lines, pager, saveBlob, select, showError, table, fill } from "./ui.js";

const POLL_MS = 2000;
// Charts read at most this many users of a result (pages of 500): enough for a shape, and a
// result of millions stays one download away.
const CHART_USERS = 2000;

function isLive(status) {
  return status === "QUEUED" || status === "RUNNING";
}

// One group per line, the API's two forms: "LABEL", or "ALIAS: LABEL, LABEL -EXCLUDED, -EXCLUDED"
// (a label after " -" or a leading "-" is excluded).
function labelGroups(text) {
  return lines(text).map((line) => {
    const colon = line.indexOf(":");
    if (colon < 0) return line;
    const includeLabels = [];
    const excludeLabels = [];
    for (const item of line.slice(colon + 1).split(",")) {
      const [first, ...excluded] = ` ${item.trim()}`.split(/\s+-(?=\S)/);
      if (first.trim()) includeLabels.push(first.trim());
      excludeLabels.push(...excluded.map((l) => l.trim()).filter(Boolean));
    }
    return { alias: line.slice(0, colon).trim(), includeLabels, excludeLabels };
  });
}

// The form's controls per type: [label, API field, control, hint].
function controlsFor(type) {
  const number = (attributes = {}) => h("input", { type: "text", inputmode: "decimal", autocomplete: "off", ...attributes });
  const accountType = (withAny) => select(withAny ? [["", "Any account"], ...ACCOUNT_TYPES] : ACCOUNT_TYPES, "checking");
  const date = () => h("input", { type: "date" });
  switch (type) {
    case "highBalance":
      return [
        ["Account type", "accountType", accountType(false)],
        ["Threshold", "threshold", number({ placeholder: "5000.00" }), "Accounts with a balance at or above this amount."],
        ["Currency", "currency", h("input", { type: "text", maxlength: 3, placeholder: "EUR", autocomplete: "off" }), "Optional: only accounts in this currency."],
      ];
    case "lowBalance":
      return [
        ["Threshold", "threshold", number({ placeholder: "100.00" })],
        ["Duration in months", "durationInMonth", number({ inputmode: "numeric", placeholder: "3" }), "1 to 24."],
        ["Account type", "accountType", accountType(false)],
      ];
    case "incomeSpendingSummary":
      return [
        ["Date from", "dateFrom", date()],
        ["Date to", "dateTo", date(), "At most 24 months after the start."],
        ["Account type", "accountType", accountType(true)],
      ];
    case "insuranceSpending":
      return [["Duration in months", "durationInMonth", number({ inputmode: "numeric", placeholder: "12" }), "Optional, 1 to 24; 12 when empty."]];
    default:
      return [
        [
          "Label groups (one per line)",
          "labelGroups",
          h("textarea", { rows: 4, spellcheck: "false", placeholder: "groceries\nliving: rent, utilities -refund" }),
          "A label, or ALIAS: labels to include, -labels to exclude (comma-separated).",
        ],
        ["Duration in months", "durationInMonth", number({ inputmode: "numeric", placeholder: "6" }), "1 to 12."],
      ];
  }
}

const INTEGER_FIELDS = new Set(["durationInMonth"]);
const MONEY_FIELDS = new Set(["threshold"]);

function startForm(context, type, onStarted) {
  const controls = [
    ...controlsFor(type),
    ["As of", "asOf", h("input", { type: "date" }), "Optional: the day the data is read as of; today when empty."],
    ["Callback URL", "callbackURL", h("input", { type: "url", placeholder: "https://", autocomplete: "off" }), "Optional: https address told when the job ends."],
  ];
  // One key per intended job: a double submit or a retry after a lost answer starts one job.
  let idempotencyKey = crypto.randomUUID();
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "start-heading" },
    h("h2", { id: "start-heading" }, "Start a job"),
    h("div", { class: "grid" }, controls.map(([label, name, control, hint]) => field(label, control, { field: name, hint }))),
    h("button", { type: "submit", class: "primary" }, "Start job"),
  );
  form.addEventListener("input", () => {
    idempotencyKey = crypto.randomUUID();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {};
    for (const [, name, control] of controls) {
      const value = control.value;
      if (!value.trim()) continue;
      if (name === "labelGroups") body.labelGroups = labelGroups(value);
      else if (MONEY_FIELDS.has(name) || INTEGER_FIELDS.has(name)) body[name] = literal(value);
      else body[name] = value.trim();
    }
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      clearErrors(form);
      const answer = await context.api.call(
        "POST",
        `/segments/${type}`,
        { body, headers: { "Idempotency-Key": idempotencyKey } },
        [202],
      );
      idempotencyKey = crypto.randomUUID();
      announce(`Job ${answer.data.jobId} started.`);
      onStarted(answer.data);
    } catch (error) {
      showError(form, error);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

export async function jobsPage(context, requestedType) {
  const { api, main, onLeave } = context;
  const type = SEGMENT_TYPES.some((t) => t.id === requestedType) ? requestedType : "highBalance";
  const typeSelect = select(SEGMENT_TYPES.map((t) => [t.id, t.title]), type);
  typeSelect.addEventListener("change", () => {
    window.location.hash = `#/jobs/${typeSelect.value}`;
  });
  const jobsSlot = h("div");
  let timer = null;
  let jobs = [];
  let cursor = null;
  onLeave(() => clearTimeout(timer));

  function render() {
    const rows = jobs.map((job) => {
      const progress = job.progress ?? { shardsDone: 0, shardsTotal: 0 };
      return h(
        "tr",
        { dataset: { jobId: job.jobId } },
        h("td", {}, h("code", {}, job.jobId.slice(0, 8)), " ", h("a", { href: `#/jobs/${type}/${job.jobId}`, "aria-label": `View job ${job.jobId}` }, "View")),
        h("td", {}, formatDateTime(job.creationDate)),
        h("td", {}, h("span", { class: `badge ${job.status.toLowerCase()}` }, job.status)),
        h(
          "td",
          {},
          h("progress", { max: progress.shardsTotal || 1, value: progress.shardsDone, "aria-label": `${progress.shardsDone} of ${progress.shardsTotal} shards` }),
          ` ${progress.shardsDone}/${progress.shardsTotal}`,
        ),
        h("td", { class: "number" }, job.totalElements ?? "—"),
      );
    });
    fill(jobsSlot, table("Jobs", ["Job", "Created", "Status", "Progress", "Users"], rows));
    if (cursor) jobsSlot.append(h("button", { type: "button", onclick: more }, "Show older jobs"));
  }

  // The newest page again (new jobs, changed statuses), followed by the older jobs already shown.
  let older = [];
  async function refresh() {
    clearTimeout(timer);
    try {
      const answer = await api.get(`/segments/${type}`, { limit: 20 });
      const newest = new Set(answer.jobs.map((j) => j.jobId));
      older = older.filter((j) => !newest.has(j.jobId));
      jobs = [...answer.jobs, ...older];
      if (older.length === 0) cursor = answer.nextCursor;
      render();
    } catch (error) {
      fill(jobsSlot, errorBox(error));
    }
    if (jobs.some((j) => isLive(j.status))) timer = setTimeout(refresh, POLL_MS);
  }

  async function more() {
    try {
      const answer = await api.get(`/segments/${type}`, { limit: 20, cursor });
      older = [...older, ...answer.jobs];
      jobs = [...jobs, ...answer.jobs];
      cursor = answer.nextCursor;
      render();
    } catch (error) {
      announce(error.message, { error: true });
    }
  }

  fill(main,
    h("h1", {}, "Financial segments"),
    h("form", { class: "filters", onsubmit: (e) => e.preventDefault() }, field("Segment type", typeSelect)),
    startForm(context, type, () => refresh()),
    h("section", { "aria-label": `${typeTitle(type)} jobs` }, h("h2", {}, `${typeTitle(type)} jobs`), jobsSlot),
  );
  await refresh();
}

// Rows of the result table for one user entry.
function userRows(type, user) {
  const cell = (value, number) => h("td", { class: number ? "number" : null }, value);
  if (type === "highBalance" || type === "lowBalance") {
    return user.accounts.map((a, i) => h("tr", {}, cell(i === 0 ? user.userId : ""), cell(a.accountId), cell(formatMoney(a.amount), true)));
  }
  if (type === "incomeSpendingSummary") {
    return [
      h(
        "tr",
        {},
        cell(user.userId),
        cell(user.incomingCount, true),
        cell(formatMoney(user.incomingAmount), true),
        cell(user.outgoingCount, true),
        cell(formatMoney(user.outgoingAmount), true),
        cell(user.accounts.length, true),
      ),
    ];
  }
  if (type === "insuranceSpending") {
    return user.accounts.flatMap((a) =>
      a.insurances.map((x) =>
        h("tr", {}, cell(user.userId), cell(a.accountId), cell(x.insuranceType), cell(x.provider), cell(x.frequency), cell(x.lastPaymentDate), cell(formatMoney(x.totalAmount), true)),
      ),
    );
  }
  return user.labelGroups.map((g, i) =>
    h(
      "tr",
      {},
      cell(i === 0 ? user.userId : ""),
      cell(g.alias),
      cell(formatMoney(g.total), true),
      cell(formatMoney(g.average), true),
      cell(formatMoney(g.minimum), true),
      cell(formatMoney(g.maximum), true),
      cell(formatMoney(g.median), true),
    ),
  );
}

const HEADERS = {
  highBalance: ["User", "Account", "Balance"],
  lowBalance: ["User", "Account", "Lowest balance"],
  incomeSpendingSummary: ["User", "Incoming", "Incoming amount", "Outgoing", "Outgoing amount", "Accounts"],
  insuranceSpending: ["User", "Account", "Insurance type", "Provider", "Frequency", "Last payment", "Total paid"],
  financialBreakdown: ["User", "Label group", "Total", "Average", "Minimum", "Maximum", "Median"],
};

function countBy(values) {
  const counts = new Map();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts.entries()].sort((a, b) => b[1] - a[1]).map(([label, value]) => ({ label, value }));
}

// The charts of a result, from its first users.
function charts(type, users, total, groupAlias, onGroup) {
  const note = users.length < total ? h("p", { class: "hint" }, `Charts show the first ${users.length} of ${total} users.`) : null;
  if (type === "highBalance" || type === "lowBalance") {
    const amounts = users.flatMap((u) => u.accounts.map((a) => Number(a.amount)));
    return [note, histogram("Distribution of balances", amounts)];
  }
  if (type === "insuranceSpending") {
    const insurances = users.flatMap((u) => u.accounts.flatMap((a) => a.insurances));
    return [
      note,
      h(
        "div",
        { class: "two" },
        barChart("Insurance types", countBy(insurances.map((x) => x.insuranceType))),
        barChart("Payment frequencies", countBy(insurances.map((x) => x.frequency))),
      ),
    ];
  }
  if (type === "incomeSpendingSummary") {
    const net = users.map((u) => Number(u.incomingAmount) - Number(u.outgoingAmount));
    return [note, histogram("Income and spending per user", net)];
  }
  const aliases = users[0]?.labelGroups.map((g) => g.alias) ?? [];
  if (aliases.length === 0) return [note];
  const alias = aliases.includes(groupAlias) ? groupAlias : aliases[0];
  const months = new Map();
  for (const user of users) {
    const group = user.labelGroups.find((g) => g.alias === alias);
    for (const m of group?.months ?? []) months.set(m.month, (months.get(m.month) ?? 0) + Number(m.total));
  }
  const chooser = select(aliases, alias);
  chooser.addEventListener("change", () => onGroup(chooser.value));
  const items = [...months.entries()].sort().map(([label, value]) => ({ label, value, display: value.toFixed(2) }));
  return [note, h("form", { class: "filters", onsubmit: (e) => e.preventDefault() }, field("Label group", chooser)), barChart(`Monthly totals of ${alias}`, items)];
}

export async function resultPage(context, type, jobId) {
  const { api, main, onLeave } = context;
  const back = h("p", {}, h("a", { href: `#/jobs/${type}` }, `← ${typeTitle(type)} jobs`));
  const heading = h("h1", {}, `Result of ${jobId.slice(0, 8)}…`);
  const body = h("div", {}, h("p", { class: "loading" }, "Loading the result…"));
  fill(main, back, heading, body);
  let timer = null;
  onLeave(() => clearTimeout(timer));
  let perPage = 20;
  let chartUsers = null;
  let groupAlias = null;
  const chartSlot = h("section", { "aria-label": "Charts" });
  const tableSlot = h("div");
  const path = `/segments/${encodeURIComponent(type)}/${encodeURIComponent(jobId)}`;

  async function readPage(page, size) {
    return api.request("GET", path, { query: { page, perPage: size } });
  }

  async function show(page) {
    clearTimeout(timer);
    let answer;
    try {
      answer = await readPage(page, perPage);
    } catch (error) {
      fill(body, errorBox(error));
      return;
    }
    if (answer.status === 404 && answer.data?.status) {
      const { shardsDone, shardsTotal } = answer.data.progress ?? { shardsDone: 0, shardsTotal: 0 };
      fill(body,
        h("p", {}, `Status: ${answer.data.status}`),
        h("progress", { max: shardsTotal || 1, value: shardsDone, "aria-label": "Progress" }),
        h("p", {}, `${shardsDone} of ${shardsTotal} shards done`),
      );
      timer = setTimeout(() => show(page), POLL_MS);
      return;
    }
    if (answer.status !== 200) {
      const reason = answer.problem?.detail || answer.problem?.title || `HTTP ${answer.status}`;
      fill(body, h("p", { role: "alert", class: "error" }, answer.status === 422 ? `The job failed: ${reason}` : reason));
      return;
    }
    const result = answer.data;
    if (!body.contains(tableSlot)) {
      fill(body,
        h("p", {}, `Status: COMPLETED`),
        h(
          "dl",
          { class: "details" },
          h("dt", {}, "Type"),
          h("dd", {}, typeTitle(type)),
          h("dt", {}, "As of"),
          h("dd", {}, result.asOf),
          h("dt", {}, "Created"),
          h("dd", {}, formatDateTime(result.creationDate)),
          h("dt", {}, "Expires"),
          h("dd", {}, formatDateTime(result.expiresAt)),
          h("dt", {}, "Parameters"),
          h("dd", {}, describe(result.parameters)),
          h("dt", {}, "Users"),
          h("dd", {}, String(result.totalElements)),
        ),
        h("div", { class: "actions" }, h("button", { type: "button", onclick: download }, "Download export")),
        chartSlot,
        tableSlot,
      );
      loadCharts(result.totalElements);
    }
    const sizes = select(["20", "50", "100"], String(perPage));
    sizes.addEventListener("change", () => {
      perPage = Number(sizes.value);
      show(1);
    });
    fill(tableSlot,
      h("form", { class: "filters", onsubmit: (e) => e.preventDefault() }, field("Users per page", sizes)),
      table("Users", HEADERS[type], result.users.flatMap((u) => userRows(type, u))),
      pager(result.page, result.totalPages, show),
    );
  }

  async function loadCharts(total) {
    fill(chartSlot, h("p", { class: "loading" }, "Drawing charts…"));
    try {
      if (!chartUsers) {
        chartUsers = [];
        for (let page = 1; chartUsers.length < Math.min(total, CHART_USERS); page += 1) {
          const answer = await readPage(page, 500);
          if (answer.status !== 200 || answer.data.users.length === 0) break;
          chartUsers.push(...answer.data.users);
        }
      }
      fill(chartSlot,
        h("h2", {}, "Charts"),
        ...charts(type, chartUsers, total, groupAlias, (alias) => {
          groupAlias = alias;
          loadCharts(total);
        }).filter(Boolean),
      );
    } catch (error) {
      fill(chartSlot, errorBox(error));
    }
  }

  async function download(event) {
    const button = event.currentTarget;
    button.disabled = true;
    announce("Preparing the export…");
    try {
      const blob = await api.download(`${path}/export`);
      saveBlob(blob, `${type}-${jobId}.ndjson`);
      announce("Export downloaded.");
    } catch (error) {
      announce(error.message, { error: true });
    } finally {
      button.disabled = false;
    }
  }

  await show(1);
}
