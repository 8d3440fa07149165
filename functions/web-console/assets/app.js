// The console's entry: sign-in, the header, and the routes (#/segments, #/jobs, #/usage).

import { Api } from "./api.js";
import {
  cognitoSignOutUrl,
  finishCognitoSignIn,
  forgetToken,
  isExpired,
  mandatorOf,
  startCognitoSignIn,
  storeToken,
  storedToken,
  takeTokenFromFragment,
} from "./auth.js";
import { segmentPage, segmentsPage } from "./segments.js";
import { jobsPage, resultPage } from "./jobs.js";
import { usagePage } from "./usage.js";
import { field, h, fill } from "./ui.js";

const main = document.getElementById("main");
const header = document.getElementById("header");
let config = { signIn: "token" };
// Cleanups of the page on screen (timers of live views), run when another page replaces it.
let leaving = [];

const api = new Api(
  () => storedToken(),
  (error) => signOut(`The token was refused: ${error.message}`),
);

function currentMonth() {
  return new Date().toISOString().slice(0, 7);
}

function leave() {
  for (const cleanup of leaving) cleanup();
  leaving = [];
}

function signOut(message) {
  const wasCognito = config.signIn === "cognito" && storedToken() && !message;
  forgetToken();
  leave();
  header.hidden = true;
  if (wasCognito) {
    window.location.assign(cognitoSignOutUrl(config));
    return;
  }
  showSignIn(message);
}

function showSignIn(message) {
  header.hidden = true;
  document.title = "Sign in — Financial Segments";
  const notice = message ? h("p", { role: "alert", class: "error" }, message) : null;
  if (config.signIn === "cognito") {
    fill(main,
      h(
        "section",
        { class: "sign-in" },
        h("h1", {}, "Sign in"),
        notice,
        h("p", {}, "Sign in with the account your organisation gave you."),
        h("button", { type: "button", class: "primary", onclick: () => startCognitoSignIn(config) }, "Sign in"),
      ),
    );
    return;
  }
  const tokenInput = h("textarea", { rows: 4, spellcheck: "false", autocomplete: "off", required: true });
  const form = h(
    "form",
    { class: "sign-in" },
    h("h1", {}, "Sign in"),
    notice,
    h("p", {}, "Paste a bearer token of the service. Locally, `segments serve --demo` prints an address that signs you in directly, and `segments token --mandator M` prints a token."),
    field("Access token", tokenInput),
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = tokenInput.value.trim();
    if (!token) {
      showSignIn("Paste a token first.");
      return;
    }
    storeToken(token);
    await enter();
  });
  fill(main, form);
  tokenInput.focus();
}

// Checks the stored token against the API once (401 means refused; a 403 for a missing scope
// still means the token is valid), then shows the requested page.
async function enter() {
  const token = storedToken();
  if (!token) return showSignIn();
  if (isExpired(token)) {
    forgetToken();
    return showSignIn("Your session has expired. Sign in again.");
  }
  try {
    await api.request("GET", "/usage", { query: { month: currentMonth() } });
  } catch (error) {
    if (error.status !== 401) showSignIn(error.message);
    return;
  }
  header.hidden = false;
  document.getElementById("mandator").textContent = `Mandator: ${mandatorOf(token) ?? "unknown"}`;
  if (!window.location.hash.startsWith("#/")) history.replaceState(null, "", "#/segments");
  route();
}

function route() {
  const token = storedToken();
  if (!token || header.hidden) return;
  if (isExpired(token)) return signOut("Your session has expired. Sign in again.");
  leave();
  const parts = window.location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const context = {
    api,
    mandator: mandatorOf(token),
    main,
    onLeave: (cleanup) => leaving.push(cleanup),
  };
  for (const link of header.querySelectorAll("nav a")) {
    const current = link.getAttribute("href").slice(2) === (parts[0] === "ledgers" ? "segments" : parts[0]);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  let page;
  if (parts[0] === "segments" && parts[1]) page = segmentPage(context, { id: parts[1], ledger: null });
  else if (parts[0] === "ledgers" && parts[2] === "segments" && parts[3]) page = segmentPage(context, { id: parts[3], ledger: parts[1] });
  else if (parts[0] === "jobs" && parts[2]) page = resultPage(context, parts[1], parts[2]);
  else if (parts[0] === "jobs") page = jobsPage(context, parts[1]);
  else if (parts[0] === "usage") page = usagePage(context);
  else page = segmentsPage(context);
  Promise.resolve(page).then(() => {
    const heading = main.querySelector("h1");
    document.title = `${heading ? heading.textContent + " — " : ""}Financial Segments`;
  });
  main.focus({ preventScroll: true });
}

async function start() {
  try {
    const response = await fetch("/console/config.json", { cache: "no-store" });
    if (response.ok) config = await response.json();
  } catch {
    // Without its configuration the console still offers token sign-in.
  }
  document.getElementById("sign-out").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", () => {
    // A signed-in address opened in a tab that already shows the console.
    if (takeTokenFromFragment()) enter();
    else if (window.location.hash.startsWith("#/")) route();
  });
  if (config.signIn === "cognito") {
    const problem = await finishCognitoSignIn(config);
    if (problem) return showSignIn(problem);
  }
  takeTokenFromFragment();
  await enter();
}

start().catch((error) => {
  fill(main, h("p", { role: "alert", class: "error" }, `The console could not start: ${error.message}`));
});
