// The public API, called with the signed-in person's token. The console has no other way to
// read or change anything: what the API refuses, the console cannot do.

// Amounts are exact decimals. JSON.parse would turn 12345678901234.56 into the nearest double, so
// every number that is not a small integer is kept as its literal: an `Exact`, which prints as
// that text, converts to a Number for charts, and goes back into JSON as the same literal.
export class Exact {
  constructor(text) {
    this.text = text;
  }

  toString() {
    return this.text;
  }

  valueOf() {
    return Number(this.text);
  }

  toJSON() {
    return JSON.rawJSON ? JSON.rawJSON(this.text) : Number(this.text);
  }
}

function exactNumbers(_key, value, context) {
  if (typeof value === "number" && context && typeof context.source === "string") {
    const source = context.source;
    if (!Number.isSafeInteger(value) || /[.eE]/.test(source)) return new Exact(source);
  }
  return value;
}

export function parseJson(text) {
  return JSON.parse(text, exactNumbers);
}

// A number typed by a person, sent as the exact literal they typed. A text that is not a JSON
// number goes as a string, so the API refuses it with its own message for that field.
export function literal(text) {
  const trimmed = String(text).trim();
  if (/^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$/.test(trimmed) && JSON.rawJSON) {
    return JSON.rawJSON(trimmed);
  }
  return trimmed;
}

// A refusal of the API: the RFC 9457 problem when there is one.
export class ApiError extends Error {
  constructor(status, problem, fallback) {
    super(problem?.detail || problem?.title || fallback || `The request failed (HTTP ${status}).`);
    this.status = status;
    this.problem = problem;
    this.field = problem?.field ?? null;
    this.code = problem?.code ?? null;
  }
}

export class Api {
  // `token()` gives the current bearer token; `onRefused(error)` is told when the API no
  // longer accepts it (401), so the console can ask for a new one.
  constructor(token, onRefused) {
    this.token = token;
    this.onRefused = onRefused;
  }

  async request(method, path, { query, body, accept, headers: extra } = {}) {
    const url = new URL(path, window.location.origin);
    for (const [key, value] of Object.entries(query || {})) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
    }
    const headers = { ...extra, Authorization: `Bearer ${this.token()}` };
    if (accept) headers.Accept = accept;
    let payload;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, { method, headers, body: payload, cache: "no-store" });
    } catch (e) {
      throw new ApiError(0, null, "The service cannot be reached. Check the connection and try again.");
    }
    const text = method === "HEAD" ? "" : await response.text();
    const type = response.headers.get("Content-Type") || "";
    let data = null;
    if (text && type.includes("json")) {
      try {
        data = parseJson(text);
      } catch {
        data = null;
      }
    }
    const isProblem = type.includes("application/problem+json");
    if (response.status === 401) {
      const error = new ApiError(401, isProblem ? data : null, "The token was refused.");
      this.onRefused(error);
      throw error;
    }
    return { status: response.status, ok: response.ok, headers: response.headers, data, problem: isProblem ? data : null };
  }

  // The answer's body when the status is one of `expected`, an ApiError otherwise.
  async call(method, path, options = {}, expected = [200]) {
    const answer = await this.request(method, path, options);
    if (!expected.includes(answer.status)) {
      throw new ApiError(answer.status, answer.problem, answer.status >= 500 ? "The service failed; try again." : undefined);
    }
    return answer;
  }

  async get(path, query) {
    return (await this.call("GET", path, { query })).data;
  }

  // An export: the API answers 302 to a short-lived signed link, which fetch follows (the
  // browser drops the Authorization header when the link is on another origin).
  async download(path) {
    let response;
    try {
      response = await fetch(new URL(path, window.location.origin), {
        headers: { Authorization: `Bearer ${this.token()}` },
        cache: "no-store",
      });
    } catch {
      throw new ApiError(0, null, "The export could not be downloaded. Check the connection and try again.");
    }
    if (!response.ok) {
      const type = response.headers.get("Content-Type") || "";
      const problem = type.includes("json") ? parseJson(await response.text()) : null;
      if (response.status === 401) this.onRefused(new ApiError(401, problem, "The token was refused."));
      throw new ApiError(response.status, problem, "The export could not be downloaded.");
    }
    return response.blob();
  }
}

export const SEGMENT_TYPES = [
  { id: "highBalance", title: "High balance" },
  { id: "lowBalance", title: "Low balance" },
  { id: "incomeSpendingSummary", title: "Income and spending" },
  { id: "insuranceSpending", title: "Insurance spending" },
  { id: "financialBreakdown", title: "Financial breakdown" },
];

export const ACCOUNT_TYPES = ["checking", "savings", "creditCard", "security", "loan", "pocket", "membership", "bausparen"];

export const STATUS_CODES = ["ACTIVE", "INACTIVE", "PENDING", "SUSPENDED"];

export function typeTitle(id) {
  return SEGMENT_TYPES.find((t) => t.id === id)?.title ?? id;
}
