//! The web console: a few static files compiled into the binary and served under `/console`.
//!
//! The files carry no data and no secret, so they are served without a token; everything the
//! console shows or changes goes through the public API with the caller's own token, and the API
//! decides what is allowed. The same function serves them behind API Gateway (same origin as the
//! API: no CORS, no second host to deploy) and in the local runner.
//!
//! `config.json` tells the page how to sign in: with a pasted token (the local runner's HS256
//! development tokens) or through the Cognito hosted UI (authorization code with PKCE).

use http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use sha2::{Digest, Sha256};

/// Where the console lives.
pub const BASE_PATH: &str = "/console";

/// One file of the console.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! assets {
    ($(($name:literal, $type:literal)),* $(,)?) => {
        &[$(Asset { name: $name, content_type: $type, bytes: include_bytes!(concat!("../assets/", $name)) }),*]
    };
}

/// Every file of the console. `index.html` is also the answer for `/console/`.
const ASSETS: &[Asset] = assets![
    ("index.html", "text/html; charset=utf-8"),
    ("console.css", "text/css; charset=utf-8"),
    ("app.js", "text/javascript; charset=utf-8"),
    ("api.js", "text/javascript; charset=utf-8"),
    ("auth.js", "text/javascript; charset=utf-8"),
    ("ui.js", "text/javascript; charset=utf-8"),
    ("charts.js", "text/javascript; charset=utf-8"),
    ("segments.js", "text/javascript; charset=utf-8"),
    ("jobs.js", "text/javascript; charset=utf-8"),
    ("usage.js", "text/javascript; charset=utf-8"),
    ("favicon.svg", "image/svg+xml"),
];

/// How a person signs in to the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignIn {
    /// Paste a bearer token (or receive it in the URL's fragment from `segments serve`).
    Token,
    /// The Cognito hosted UI: authorization code with PKCE, a public client without a secret.
    Cognito {
        /// `https://<prefix>.auth.<region>.amazoncognito.com`
        domain: String,
        client_id: String,
        scopes: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    pub sign_in: SignIn,
}

/// A one-line reason the console's configuration is unusable.
#[derive(Debug)]
pub struct ConfigError(String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The environment variables of a deployed console.
pub const COGNITO_DOMAIN_VAR: &str = "CONSOLE_COGNITO_DOMAIN";
pub const CLIENT_ID_VAR: &str = "CONSOLE_CLIENT_ID";
pub const SCOPES_VAR: &str = "CONSOLE_SCOPES";

impl ConsoleConfig {
    /// Token sign-in, as the local runner serves it.
    pub fn token() -> ConsoleConfig {
        ConsoleConfig { sign_in: SignIn::Token }
    }

    /// Cognito sign-in when both the domain and the client id are set, token sign-in when neither
    /// is; one without the other is a deployment mistake and refused.
    pub fn from_env() -> Result<ConsoleConfig, ConfigError> {
        ConsoleConfig::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<ConsoleConfig, ConfigError> {
        let var = |name| lookup(name).filter(|v| !v.trim().is_empty());
        match (var(COGNITO_DOMAIN_VAR), var(CLIENT_ID_VAR)) {
            (None, None) => Ok(ConsoleConfig::token()),
            (Some(domain), Some(client_id)) => {
                let domain = domain.trim().trim_end_matches('/').to_owned();
                if !domain.starts_with("https://") {
                    return Err(ConfigError(format!("{COGNITO_DOMAIN_VAR} must be an https:// URL, got {domain:?}")));
                }
                let scopes = var(SCOPES_VAR).unwrap_or_default().split_whitespace().map(str::to_owned).collect();
                Ok(ConsoleConfig {
                    sign_in: SignIn::Cognito { domain, client_id: client_id.trim().to_owned(), scopes },
                })
            }
            _ => Err(ConfigError(format!("set both {COGNITO_DOMAIN_VAR} and {CLIENT_ID_VAR}, or neither"))),
        }
    }

    /// What the page reads at start-up to choose its sign-in screen.
    fn to_json(&self) -> serde_json::Value {
        match &self.sign_in {
            SignIn::Token => serde_json::json!({"signIn": "token"}),
            SignIn::Cognito { domain, client_id, scopes } => serde_json::json!({
                "signIn": "cognito",
                "authorizeUrl": format!("{domain}/oauth2/authorize"),
                "tokenUrl": format!("{domain}/oauth2/token"),
                "logoutUrl": format!("{domain}/logout"),
                "clientId": client_id,
                "scopes": scopes,
            }),
        }
    }

    /// The page may talk to its own origin only, plus, when deployed, the Cognito token endpoint
    /// and S3 (an export's download is a presigned S3 URL the API redirects to).
    fn content_security_policy(&self) -> String {
        let connect = match &self.sign_in {
            SignIn::Token => "'self'".to_owned(),
            SignIn::Cognito { domain, .. } => format!("'self' {domain} https://*.amazonaws.com"),
        };
        format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
             connect-src {connect}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
    }
}

/// Answers a request for a console path: the file (the page for `/console` and `/console/`),
/// `304` when the caller's copy is current, `404` for anything else, `405` for methods other
/// than GET and HEAD.
pub fn respond(config: &ConsoleConfig, request: &Request) -> Response<Body> {
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "the console serves GET and HEAD only");
    }
    let path = request.uri().path();
    let Some(rest) = path.strip_prefix(BASE_PATH) else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let (bytes, content_type): (Vec<u8>, &str) = match rest {
        // Both forms: API Gateway may hand the function either, and a redirect between them
        // could loop. The page names its files by absolute paths, so both load them alike.
        "" | "/" => file("index.html"),
        "/config.json" => (config.to_json().to_string().into_bytes(), "application/json"),
        other => match ASSETS.iter().find(|a| Some(a.name) == other.strip_prefix('/')) {
            Some(a) => (a.bytes.to_vec(), a.content_type),
            None => return plain(StatusCode::NOT_FOUND, "not found"),
        },
    };
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&bytes))[..32]);
    let current = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let builder = Response::builder()
        .header(header::ETAG, &etag)
        // Revalidated on every load: a deployment is seen at once, and the ETag makes it cheap.
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::CONTENT_SECURITY_POLICY, config.content_security_policy())
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        // Nothing of the console's addresses leaves for another site.
        .header(header::REFERRER_POLICY, "no-referrer");
    let response = if current {
        builder.status(StatusCode::NOT_MODIFIED).body(Body::Empty)
    } else {
        let body = if method == Method::HEAD { Body::Empty } else { Body::Binary(bytes) };
        builder.status(StatusCode::OK).header(header::CONTENT_TYPE, content_type).body(body)
    };
    response.expect("a valid response")
}

fn file(name: &str) -> (Vec<u8>, &'static str) {
    let asset = ASSETS.iter().find(|a| a.name == name).expect("a listed asset");
    (asset.bytes.to_vec(), asset.content_type)
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::Text(text.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests;
