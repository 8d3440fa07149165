// Who is signed in. The token lives in sessionStorage only (gone with the tab), never in a URL
// sent to a server and never in a log.
//
// Two ways in, chosen by config.json:
// - "token": paste a bearer token, or open the address `segments serve` prints, whose fragment
//   (#token=…) the browser never sends; the page takes it and removes it from the address bar.
// - "cognito": the Cognito hosted UI, authorization code with PKCE (RFC 7636), public client.

const TOKEN_KEY = "segments.console.token";
const PKCE_KEY = "segments.console.pkce";

export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function storeToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token.trim());
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// The claims of a JWT, for display only (the API verifies the token; the console does not).
export function claims(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(
      [...atob(payload)].map((c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
    );
    return JSON.parse(json);
  } catch {
    return null;
  }
}

// The mandator the API will read from the token: the one group of a console user of the hosted
// UI, else the token's client id (the service's default mandator claim).
export function mandatorOf(token) {
  const c = claims(token);
  if (!c) return null;
  const groups = c["cognito:groups"];
  if (Array.isArray(groups) && groups.length === 1) return groups[0];
  return c.client_id ?? c.sub ?? null;
}

export function isExpired(token, now = Date.now()) {
  const c = claims(token);
  return Boolean(c && typeof c.exp === "number" && c.exp * 1000 <= now);
}

// Takes a token handed over in the fragment (#token=…) and removes it from the address bar and
// the history.
export function takeTokenFromFragment() {
  const hash = window.location.hash;
  if (!hash.startsWith("#token=")) return false;
  const token = decodeURIComponent(hash.slice("#token=".length));
  history.replaceState(null, "", window.location.pathname + "#/segments");
  if (token) storeToken(token);
  return Boolean(token);
}

function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomText(bytes = 32) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

// The address Cognito sends the person back to: the one callback URL of the console's client,
// whichever of /console and /console/ the page was opened at.
function redirectUri() {
  return window.location.origin + "/console/";
}

// Sends the browser to the hosted UI with a fresh verifier and state.
export async function startCognitoSignIn(config) {
  const verifier = randomText(48);
  const state = randomText(16);
  sessionStorage.setItem(PKCE_KEY, JSON.stringify({ verifier, state }));
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const url = new URL(config.authorizeUrl);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: config.clientId,
    redirect_uri: redirectUri(),
    scope: config.scopes.join(" "),
    state,
    code_challenge: challenge,
    code_challenge_method: "S256",
  }).toString();
  window.location.assign(url.toString());
}

// Back from the hosted UI with ?code=…&state=…: exchanges the code for tokens (the verifier
// proves this page started the sign-in) and removes both from the address bar. Returns an error
// message, or null.
export async function finishCognitoSignIn(config) {
  const params = new URLSearchParams(window.location.search);
  const code = params.get("code");
  const error = params.get("error");
  if (!code && !error) return null;
  history.replaceState(null, "", redirectUri() + "#/segments");
  const pending = JSON.parse(sessionStorage.getItem(PKCE_KEY) || "null");
  sessionStorage.removeItem(PKCE_KEY);
  if (error) return `Sign-in was not completed: ${params.get("error_description") || error}.`;
  if (!pending || pending.state !== params.get("state")) return "Sign-in was not completed: the answer did not match this browser's request. Try again.";
  const response = await fetch(config.tokenUrl, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      client_id: config.clientId,
      code,
      redirect_uri: redirectUri(),
      code_verifier: pending.verifier,
    }),
  }).catch(() => null);
  if (!response || !response.ok) return "Sign-in was not completed: the token could not be obtained. Try again.";
  const tokens = await response.json();
  storeToken(tokens.access_token);
  return null;
}

export function cognitoSignOutUrl(config) {
  const url = new URL(config.logoutUrl);
  url.search = new URLSearchParams({ client_id: config.clientId, logout_uri: redirectUri() }).toString();
  return url.toString();
}
