//! Cognito access tokens for `segments serve --aws`: the checks API Gateway's JWT authorizer makes
//! in a deployment (infra/template.yaml, `CognitoJwt`), made by the runner, so a user of the real
//! user pool can use the runner against the AWS resources with the tokens the deployed API takes.
//!
//! A token is accepted when it is signed with RS256 by a key of the user pool's JWKS
//! (`<issuer>/.well-known/jwks.json`), names the pool as its issuer, is an access token
//! (`token_use`), was issued to one of the accepted app clients (`client_id`: the authorizer's
//! audience) and is within its validity. Its claims then reach the handlers in the shape the
//! authorizer gives them (`VerifiedClaims::as_authorizer_passes_on`).
//!
//! The key set is fetched at start and cached. A token naming a key the cache does not hold makes
//! the runner fetch the set again (Cognito rotates keys by publishing a new one): the first time a
//! token needs it, then at most once per [`CognitoSettings::min_refetch_interval`], so tokens
//! with made-up key ids cannot make it fetch per request.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use crate::token::{BearerVerifier, VerifiedClaims};

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds. The runner's clock and Cognito's
/// are set independently (a laptop's may be off by tens of seconds); a minute absorbs that while
/// adding little to an access token's validity (5 minutes to a day, 60 minutes by default).
pub const LEEWAY_SECONDS: u64 = 60;
/// The shortest time between two fetches of the key set after the first.
pub const DEFAULT_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// How long a fetched key set is used before it is fetched again, so a key the pool withdrew is
/// dropped as well (a new key is picked up at once through its unknown key id).
pub const KEY_SET_MAX_AGE: Duration = Duration::from_secs(3600);
/// A fetch of the key set that takes longer fails.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Cognito's key sets hold two keys of about 500 bytes each; anything this large is not one.
const MAX_KEY_SET_BYTES: usize = 64 * 1024;
/// The path of the key set under the issuer, as Cognito publishes it.
const JWKS_PATH: &str = ".well-known/jwks.json";

/// Misconfiguration found before the runner starts.
#[derive(Debug, thiserror::Error)]
pub enum CognitoConfigError {
    #[error("the user pool id {0:?} is not of the form <region>_<id> (e.g. eu-central-1_AbC123xyz)")]
    UserPoolId(String),
    #[error("the issuer {0:?} is not an absolute URL: {1}")]
    IssuerUrl(String, url::ParseError),
    #[error(
        "the issuer {0:?} must be https (plain http is allowed only to a loopback address, for an emulator or a test)"
    )]
    IssuerScheme(String),
    #[error("the issuer {0:?} must have no query, fragment or user name")]
    IssuerParts(String),
    #[error("no accepted app client id: give at least one (the authorizer's audience)")]
    NoClientIds,
    #[error("the app client id {0:?} is empty or contains white space")]
    ClientId(String),
    #[error("cannot build the HTTP client for the key set: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error(transparent)]
    KeySet(#[from] KeySetError),
}

/// A fetch of the key set that failed.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error("fetching the key set {url} failed: {source}")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the key set {url} answered {status}")]
    Status { url: String, status: reqwest::StatusCode },
    #[error("the key set {url} is larger than {MAX_KEY_SET_BYTES} bytes")]
    TooLarge { url: String },
    #[error("the key set {url} is not a JWKS: {source}")]
    Malformed {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the key set {url} holds no RS256 signing key with a key id")]
    NoUsableKey { url: String },
}

/// Why a token was refused. The messages name what was wrong with the token, never the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenRefused {
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(#[source] jsonwebtoken::errors::Error),
    #[error("the token is signed with {0:?}, not RS256")]
    Algorithm(Algorithm),
    #[error("the token's header names no key id (kid)")]
    NoKeyId,
    #[error("the key id {0} is not in the user pool's key set")]
    UnknownKey(String),
    #[error("the signature does not verify with the user pool's key {0}")]
    BadSignature(String),
    #[error("the token expired (more than {LEEWAY_SECONDS} s ago)")]
    Expired,
    #[error("the token is not valid yet (nbf more than {LEEWAY_SECONDS} s ahead)")]
    NotYetValid,
    #[error("the token was issued in the future (iat more than {LEEWAY_SECONDS} s ahead)")]
    IssuedInTheFuture,
    #[error("the token's issuer is not {0}")]
    WrongIssuer(String),
    #[error("the token lacks the claim {0}")]
    MissingClaim(String),
    #[error("the claim {0} has the wrong type")]
    ClaimType(String),
    #[error("token_use is {0}, not \"access\" (the API takes access tokens only)")]
    NotAnAccessToken(String),
    #[error("client_id {0} is not one of the accepted app clients")]
    UnknownClient(String),
    #[error("the token does not verify: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
}

/// What the runner accepts, mirroring the authorizer's `JwtConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CognitoSettings {
    /// The tokens' `iss`: `https://cognito-idp.<region>.amazonaws.com/<userPoolId>`, or another
    /// issuer for an emulator or a test.
    pub issuer: String,
    /// The app clients whose access tokens are accepted (the authorizer's `audience`).
    pub client_ids: BTreeSet<String>,
    /// The shortest time between two fetches of the key set after the first.
    pub min_refetch_interval: Duration,
}

impl CognitoSettings {
    /// The settings for a user pool: its issuer is in the pool's region, the prefix of its id, as
    /// the template's `https://cognito-idp.${AWS::Region}.amazonaws.com/${UserPool}`.
    pub fn for_user_pool(user_pool_id: &str, client_ids: &[String]) -> Result<Self, CognitoConfigError> {
        let region = user_pool_region(user_pool_id)?;
        Self::for_issuer(&format!("https://cognito-idp.{region}.amazonaws.com/{user_pool_id}"), client_ids)
    }

    /// The settings for an explicit issuer: `https`, or `http` to a loopback address (an
    /// emulator, a test's key server).
    pub fn for_issuer(issuer: &str, client_ids: &[String]) -> Result<Self, CognitoConfigError> {
        let url = Url::parse(issuer).map_err(|e| CognitoConfigError::IssuerUrl(issuer.to_owned(), e))?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name == "localhost",
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => return Err(CognitoConfigError::IssuerScheme(issuer.to_owned())),
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
            return Err(CognitoConfigError::IssuerParts(issuer.to_owned()));
        }
        if client_ids.is_empty() {
            return Err(CognitoConfigError::NoClientIds);
        }
        if let Some(bad) = client_ids.iter().find(|id| id.is_empty() || id.contains(char::is_whitespace)) {
            return Err(CognitoConfigError::ClientId(bad.clone()));
        }
        Ok(CognitoSettings {
            // The issuer is compared with `iss` as written: Cognito's has no trailing slash.
            issuer: issuer.to_owned(),
            client_ids: client_ids.iter().cloned().collect(),
            min_refetch_interval: DEFAULT_MIN_REFETCH_INTERVAL,
        })
    }

    /// `<issuer>/.well-known/jwks.json`.
    pub fn jwks_url(&self) -> String {
        format!("{}/{JWKS_PATH}", self.issuer.trim_end_matches('/'))
    }
}

/// The region of a user pool id (`eu-central-1_AbC123xyz` → `eu-central-1`).
fn user_pool_region(user_pool_id: &str) -> Result<&str, CognitoConfigError> {
    let bad = || CognitoConfigError::UserPoolId(user_pool_id.to_owned());
    let (region, id) = user_pool_id.split_once('_').ok_or_else(bad)?;
    let region_ok = !region.is_empty()
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && region.bytes().any(|b| b.is_ascii_digit());
    let id_ok = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric());
    if region_ok && id_ok { Ok(region) } else { Err(bad()) }
}

/// The verified keys of the last fetch.
struct KeyCache {
    keys: Arc<HashMap<String, DecodingKey>>,
    fetched_at: Instant,
}

/// Verifies Cognito access tokens against a user pool's keys.
pub struct CognitoVerifier {
    settings: CognitoSettings,
    jwks_url: String,
    http: reqwest::Client,
    cache: RwLock<KeyCache>,
    /// When the key set was last fetched again (`None`: only at start, so a key published just
    /// after the start is picked up at once). Held across a fetch, so concurrent requests that
    /// need one wait for it instead of fetching as well.
    last_refetch: Mutex<Option<Instant>>,
}

impl CognitoVerifier {
    /// Fetches the key set once: a runner whose issuer is wrong or unreachable does not start.
    pub async fn start(settings: CognitoSettings) -> Result<CognitoVerifier, CognitoConfigError> {
        segments_core::usecases::callbacks::install_tls_provider();
        let https_only = settings.issuer.starts_with("https:");
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            // A key set is served where it is asked for; following a redirect could reach any host.
            .redirect(reqwest::redirect::Policy::none())
            .https_only(https_only)
            .build()
            .map_err(CognitoConfigError::HttpClient)?;
        let jwks_url = settings.jwks_url();
        let keys = fetch_keys(&http, &jwks_url).await?;
        let now = Instant::now();
        Ok(CognitoVerifier {
            settings,
            jwks_url,
            http,
            cache: RwLock::new(KeyCache { keys: Arc::new(keys), fetched_at: now }),
            last_refetch: Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &CognitoSettings {
        &self.settings
    }

    /// The claims of `token` as the authorizer passes them on, or why it is refused.
    pub async fn verify(&self, token: &str) -> Result<VerifiedClaims, TokenRefused> {
        let header = jsonwebtoken::decode_header(token).map_err(TokenRefused::Malformed)?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenRefused::Algorithm(header.alg));
        }
        let kid = header.kid.ok_or(TokenRefused::NoKeyId)?;
        let key = self.key(&kid).await.ok_or_else(|| TokenRefused::UnknownKey(shown(&kid)))?;

        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Cognito's access tokens carry no `aud`: the app client is `client_id`, checked below.
        validation.validate_aud = false;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => TokenRefused::BadSignature(shown(&kid)),
                ErrorKind::ExpiredSignature => TokenRefused::Expired,
                ErrorKind::ImmatureSignature => TokenRefused::NotYetValid,
                ErrorKind::InvalidIssuer => TokenRefused::WrongIssuer(self.settings.issuer.clone()),
                ErrorKind::MissingRequiredClaim(claim) => TokenRefused::MissingClaim(claim.clone()),
                ErrorKind::InvalidClaimFormat(claim) => TokenRefused::ClaimType(claim.clone()),
                _ => TokenRefused::Invalid(e),
            }
        })?;
        let claims = data.claims;
        check_issued_at(&claims, jsonwebtoken::get_current_timestamp())?;
        match string_claim(&claims, "token_use")? {
            "access" => {}
            other => return Err(TokenRefused::NotAnAccessToken(shown(other))),
        }
        let client_id = string_claim(&claims, "client_id")?;
        if !self.settings.client_ids.contains(client_id) {
            return Err(TokenRefused::UnknownClient(shown(client_id)));
        }
        Ok(VerifiedClaims::as_authorizer_passes_on(claims))
    }

    /// The key of `kid`: from the cache, fetching the key set again when the key is unknown or
    /// the set is older than [`KEY_SET_MAX_AGE`] — at most once per minimum interval.
    async fn key(&self, kid: &str) -> Option<DecodingKey> {
        let (cached, fresh) = self.cached(kid);
        if cached.is_some() && fresh {
            return cached;
        }
        match self.refetch().await {
            // A key the new set no longer holds was withdrawn.
            Some(keys) => keys.get(kid).cloned(),
            // No new set: too soon after the last fetch (which may have been another request's,
            // finished while this one waited), or the fetch failed and the held keys stay usable.
            None => self.cached(kid).0,
        }
    }

    fn cached(&self, kid: &str) -> (Option<DecodingKey>, bool) {
        let cache = self.cache.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        (cache.keys.get(kid).cloned(), cache.fetched_at.elapsed() < KEY_SET_MAX_AGE)
    }

    /// Fetches the key set unless it was fetched again within the minimum interval; the new
    /// keys, or `None` when no fetch was made or it failed (the cache then keeps the old keys).
    async fn refetch(&self) -> Option<Arc<HashMap<String, DecodingKey>>> {
        let mut last_refetch = self.last_refetch.lock().await;
        if last_refetch.is_some_and(|at| at.elapsed() < self.settings.min_refetch_interval) {
            return None;
        }
        *last_refetch = Some(Instant::now());
        match fetch_keys(&self.http, &self.jwks_url).await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                let mut cache = self.cache.write().unwrap_or_else(|poisoned| poisoned.into_inner());
                *cache = KeyCache { keys: keys.clone(), fetched_at: Instant::now() };
                tracing::info!(url = %self.jwks_url, keys = keys.len(), "fetched the user pool's key set");
                Some(keys)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the user pool's key set could not be fetched again; keeping the keys held");
                None
            }
        }
    }
}

impl BearerVerifier for CognitoVerifier {
    type Refusal = TokenRefused;

    async fn verify_bearer(&self, token: &str) -> Result<VerifiedClaims, TokenRefused> {
        self.verify(token).await
    }
}

/// `iat` must be present, a number, and not ahead of the clock by more than the leeway (what the
/// authorizer requires of it: "before the current time").
fn check_issued_at(claims: &Map<String, Value>, now: u64) -> Result<(), TokenRefused> {
    let iat = claims.get("iat").ok_or_else(|| TokenRefused::MissingClaim("iat".to_owned()))?;
    let iat = iat.as_f64().ok_or_else(|| TokenRefused::ClaimType("iat".to_owned()))?;
    if iat > (now + LEEWAY_SECONDS) as f64 { Err(TokenRefused::IssuedInTheFuture) } else { Ok(()) }
}

fn string_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Result<&'a str, TokenRefused> {
    match claims.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(TokenRefused::ClaimType(name.to_owned())),
        None => Err(TokenRefused::MissingClaim(name.to_owned())),
    }
}

/// A value taken from a token, for a log line: quoted with control characters escaped, and cut
/// short, since whoever sent the token chose it.
fn shown(value: &str) -> String {
    const MAX_CHARS: usize = 64;
    match value.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{:?}…", &value[..end]),
        None => format!("{value:?}"),
    }
}

/// The RS256 signing keys of the key set at `url`, by key id. Keys of other types or uses are
/// skipped: Cognito signs with RS256 only.
async fn fetch_keys(http: &reqwest::Client, url: &str) -> Result<HashMap<String, DecodingKey>, KeySetError> {
    let fetch_error = |source| KeySetError::Fetch { url: url.to_owned(), source };
    let mut response = http.get(url).send().await.map_err(fetch_error)?;
    if !response.status().is_success() {
        return Err(KeySetError::Status { url: url.to_owned(), status: response.status() });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(fetch_error)? {
        if body.len() + chunk.len() > MAX_KEY_SET_BYTES {
            return Err(KeySetError::TooLarge { url: url.to_owned() });
        }
        body.extend_from_slice(&chunk);
    }
    let set: JwkSet =
        serde_json::from_slice(&body).map_err(|source| KeySetError::Malformed { url: url.to_owned(), source })?;
    let keys = signing_keys(&set);
    if keys.is_empty() {
        return Err(KeySetError::NoUsableKey { url: url.to_owned() });
    }
    Ok(keys)
}

fn signing_keys(set: &JwkSet) -> HashMap<String, DecodingKey> {
    set.keys
        .iter()
        .filter(|jwk| matches!(jwk.algorithm, AlgorithmParameters::RSA(_)))
        .filter(|jwk| matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::RS256)))
        .filter(|jwk| matches!(jwk.common.public_key_use, None | Some(PublicKeyUse::Signature)))
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => Some((kid, key)),
                Err(e) => {
                    tracing::warn!(kid = %shown(&kid), error = %e, "skipping an unreadable key of the key set");
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};

    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const KEY_A: &str = include_str!("../tests/fixtures/cognito/test-signing-key-a.pem");
    const KEY_B: &str = include_str!("../tests/fixtures/cognito/test-signing-key-b.pem");
    const CLIENT: &str = "bank-1-client";

    /// The DER inside a PKCS#1 PEM file (the fixtures carry a line of explanation first).
    fn pem_der(pem: &str) -> Vec<u8> {
        use base64::Engine;
        let body: String = pem
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        base64::engine::general_purpose::STANDARD.decode(body).unwrap()
    }

    fn encoding_key(pem: &str) -> EncodingKey {
        EncodingKey::from_rsa_der(&pem_der(pem))
    }

    fn public_jwk(pem: &str, kid: &str) -> Value {
        let mut jwk = Jwk::from_encoding_key(&encoding_key(pem), Algorithm::RS256).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        serde_json::to_value(jwk).unwrap()
    }

    /// A key server on 127.0.0.1 serving whatever `keys` holds; counts the fetches.
    struct KeyServer {
        issuer: String,
        keys: Arc<std::sync::Mutex<Value>>,
        fetches: Arc<AtomicUsize>,
    }

    async fn key_server(keys: Value) -> KeyServer {
        let keys = Arc::new(std::sync::Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (keys.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/pool/.well-known/jwks.json",
            axum::routing::get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                let body = served.lock().unwrap().clone();
                async move { axum::Json(body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}/pool", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        KeyServer { issuer, keys, fetches }
    }

    fn settings(issuer: &str) -> CognitoSettings {
        CognitoSettings::for_issuer(issuer, &[CLIENT.to_owned()]).unwrap()
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn access_claims(issuer: &str) -> Value {
        json!({
            "sub": CLIENT, "client_id": CLIENT, "token_use": "access", "iss": issuer,
            "scope": "segments/highBalance segments/usage.read", "iat": now(), "exp": now() + 3600,
            "auth_time": now(), "jti": "2b6e", "version": 2,
        })
    }

    fn sign(pem: &str, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &encoding_key(pem)).unwrap()
    }

    #[tokio::test]
    async fn a_pool_access_token_verifies_into_the_authorizer_claims() {
        let server = key_server(json!({"keys": [public_jwk(KEY_A, "a")]})).await;
        let verifier = CognitoVerifier::start(settings(&server.issuer)).await.unwrap();
        let mut claims = access_claims(&server.issuer);
        claims["cognito:groups"] = json!(["bank-1"]);
        let verified = verifier.verify(&sign(KEY_A, "a", &claims)).await.unwrap();
        assert_eq!(verified.claims["client_id"], CLIENT);
        assert_eq!(verified.claims["cognito:groups"], "[bank-1]");
        assert_eq!(verified.claims["version"], "2");
        assert_eq!(verified.scopes, ["segments/highBalance", "segments/usage.read"]);
    }

    #[tokio::test]
    async fn each_check_refuses_its_token_with_its_reason() {
        let server = key_server(json!({"keys": [public_jwk(KEY_A, "a")]})).await;
        let verifier = CognitoVerifier::start(settings(&server.issuer)).await.unwrap();
        let with = |name: &str, value: Value| {
            let mut claims = access_claims(&server.issuer);
            claims[name] = value;
            claims
        };
        let without = |name: &str| {
            let mut claims = access_claims(&server.issuer);
            claims.as_object_mut().unwrap().remove(name);
            claims
        };
        let leeway = LEEWAY_SECONDS as i64;
        /// Whether a refusal is the one a case expects.
        type Expected = fn(&TokenRefused) -> bool;
        let cases: Vec<(&str, String, Expected)> = vec![
            ("wrong issuer", sign(KEY_A, "a", &with("iss", json!("https://elsewhere.example/pool"))), |r| {
                matches!(r, TokenRefused::WrongIssuer(_))
            }),
            ("no issuer", sign(KEY_A, "a", &without("iss")), |r| matches!(r, TokenRefused::MissingClaim(_))),
            ("expired beyond the leeway", sign(KEY_A, "a", &with("exp", json!(now() - leeway - 10))), |r| {
                matches!(r, TokenRefused::Expired)
            }),
            ("no expiry", sign(KEY_A, "a", &without("exp")), |r| matches!(r, TokenRefused::MissingClaim(_))),
            ("not yet valid", sign(KEY_A, "a", &with("nbf", json!(now() + leeway + 60))), |r| {
                matches!(r, TokenRefused::NotYetValid)
            }),
            ("issued in the future", sign(KEY_A, "a", &with("iat", json!(now() + leeway + 60))), |r| {
                matches!(r, TokenRefused::IssuedInTheFuture)
            }),
            ("no iat", sign(KEY_A, "a", &without("iat")), |r| matches!(r, TokenRefused::MissingClaim(_))),
            ("an id token", sign(KEY_A, "a", &with("token_use", json!("id"))), |r| {
                matches!(r, TokenRefused::NotAnAccessToken(_))
            }),
            ("another app client", sign(KEY_A, "a", &with("client_id", json!("other-client"))), |r| {
                matches!(r, TokenRefused::UnknownClient(_))
            }),
            ("no app client", sign(KEY_A, "a", &without("client_id")), |r| matches!(r, TokenRefused::MissingClaim(_))),
            ("signed by another key under the pool's kid", sign(KEY_B, "a", &access_claims(&server.issuer)), |r| {
                matches!(r, TokenRefused::BadSignature(_))
            }),
            ("an unknown kid", sign(KEY_B, "b", &access_claims(&server.issuer)), |r| {
                matches!(r, TokenRefused::UnknownKey(_))
            }),
            ("not a JWT", "not.a.jwt".to_owned(), |r| matches!(r, TokenRefused::Malformed(_))),
        ];
        for (case, token, expected) in cases {
            let refusal = verifier.verify(&token).await.expect_err(case);
            assert!(expected(&refusal), "{case}: {refusal}");
            assert!(!refusal.to_string().contains(&token), "{case}: the reason repeats the token");
        }
        // Within the leeway, a just-expired token still passes: the clocks may differ that much.
        let recent = sign(KEY_A, "a", &with("exp", json!(now() - leeway / 2)));
        assert!(verifier.verify(&recent).await.is_ok());
    }

    #[tokio::test]
    async fn tokens_signed_with_another_algorithm_or_without_a_kid_are_refused() {
        let server = key_server(json!({"keys": [public_jwk(KEY_A, "a")]})).await;
        let verifier = CognitoVerifier::start(settings(&server.issuer)).await.unwrap();
        let claims = access_claims(&server.issuer);
        let mut hs256 = Header::new(Algorithm::HS256);
        hs256.kid = Some("a".to_owned());
        let symmetric = jsonwebtoken::encode(&hs256, &claims, &EncodingKey::from_secret(b"guessable")).unwrap();
        assert!(matches!(verifier.verify(&symmetric).await, Err(TokenRefused::Algorithm(Algorithm::HS256))));
        let no_kid = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &encoding_key(KEY_A)).unwrap();
        assert!(matches!(verifier.verify(&no_kid).await, Err(TokenRefused::NoKeyId)));
    }

    #[tokio::test]
    async fn a_new_key_is_fetched_once_and_unknown_keys_at_most_once_per_interval() {
        let server = key_server(json!({"keys": [public_jwk(KEY_A, "a")]})).await;
        let mut settings = settings(&server.issuer);
        settings.min_refetch_interval = Duration::from_millis(300);
        let verifier = CognitoVerifier::start(settings).await.unwrap();
        assert_eq!(server.fetches.load(Ordering::SeqCst), 1, "fetched at start");
        let token_a = sign(KEY_A, "a", &access_claims(&server.issuer));
        for _ in 0..20 {
            verifier.verify(&token_a).await.unwrap();
        }
        assert_eq!(server.fetches.load(Ordering::SeqCst), 1, "known keys come from the cache");

        // The pool rotates: key b is published beside a, just after the start.
        *server.keys.lock().unwrap() = json!({"keys": [public_jwk(KEY_A, "a"), public_jwk(KEY_B, "b")]});
        let token_b = sign(KEY_B, "b", &access_claims(&server.issuer));
        verifier.verify(&token_b).await.unwrap();
        assert_eq!(server.fetches.load(Ordering::SeqCst), 2, "the unknown kid made one fetch");
        let forged = sign(KEY_B, "forged", &access_claims(&server.issuer));
        assert!(matches!(verifier.verify(&forged).await, Err(TokenRefused::UnknownKey(_))));
        assert_eq!(server.fetches.load(Ordering::SeqCst), 2, "no fetch within the interval");

        // Made-up key ids, many and at once: one fetch at most once the interval has passed.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let forged: Vec<String> =
            (0..20).map(|i| sign(KEY_B, &format!("forged-{i}"), &access_claims(&server.issuer))).collect();
        let refusals = futures::future::join_all(forged.iter().map(|t| verifier.verify(t))).await;
        assert!(refusals.iter().all(|r| matches!(r, Err(TokenRefused::UnknownKey(_)))));
        assert_eq!(server.fetches.load(Ordering::SeqCst), 3, "twenty unknown kids made one fetch");
        // Both keys stay usable meanwhile.
        verifier.verify(&token_a).await.unwrap();
        verifier.verify(&token_b).await.unwrap();
        assert_eq!(server.fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_failed_refetch_keeps_the_keys_held() {
        let server = key_server(json!({"keys": [public_jwk(KEY_A, "a")]})).await;
        let mut settings = settings(&server.issuer);
        settings.min_refetch_interval = Duration::ZERO;
        let verifier = CognitoVerifier::start(settings).await.unwrap();
        *server.keys.lock().unwrap() = json!({"not": "a key set"});
        let unknown = sign(KEY_B, "b", &access_claims(&server.issuer));
        assert!(matches!(verifier.verify(&unknown).await, Err(TokenRefused::UnknownKey(_))));
        assert_eq!(server.fetches.load(Ordering::SeqCst), 2);
        verifier.verify(&sign(KEY_A, "a", &access_claims(&server.issuer))).await.unwrap();
    }

    #[tokio::test]
    async fn an_unreachable_or_empty_key_set_stops_the_start() {
        let server = key_server(json!({"keys": []})).await;
        assert!(matches!(
            CognitoVerifier::start(settings(&server.issuer)).await,
            Err(CognitoConfigError::KeySet(KeySetError::NoUsableKey { .. }))
        ));
        let missing = format!("{}/elsewhere", server.issuer);
        assert!(matches!(
            CognitoVerifier::start(settings(&missing)).await,
            Err(CognitoConfigError::KeySet(KeySetError::Status { .. }))
        ));
    }

    #[test]
    fn the_issuer_of_a_user_pool_is_in_its_region() {
        let s = CognitoSettings::for_user_pool("eu-central-1_AbC123xyz", &[CLIENT.to_owned()]).unwrap();
        assert_eq!(s.issuer, "https://cognito-idp.eu-central-1.amazonaws.com/eu-central-1_AbC123xyz");
        assert_eq!(
            s.jwks_url(),
            "https://cognito-idp.eu-central-1.amazonaws.com/eu-central-1_AbC123xyz/.well-known/jwks.json"
        );
        for bad in ["AbC123xyz", "_AbC123xyz", "eu-central-1_", "eu-central-1_a/b", "EU_abc", "eu-central-1_a_b"] {
            assert!(
                matches!(
                    CognitoSettings::for_user_pool(bad, &[CLIENT.to_owned()]),
                    Err(CognitoConfigError::UserPoolId(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn issuers_are_https_except_on_loopback_and_need_clients() {
        let clients = [CLIENT.to_owned()];
        assert!(CognitoSettings::for_issuer("http://127.0.0.1:9229/pool", &clients).is_ok());
        assert!(CognitoSettings::for_issuer("http://localhost:9229/pool", &clients).is_ok());
        assert!(CognitoSettings::for_issuer("https://issuer.example/pool", &clients).is_ok());
        for bad in ["http://issuer.example/pool", "ftp://127.0.0.1/pool"] {
            assert!(matches!(CognitoSettings::for_issuer(bad, &clients), Err(CognitoConfigError::IssuerScheme(_))));
        }
        assert!(matches!(
            CognitoSettings::for_issuer("https://issuer.example/pool?x=1", &clients),
            Err(CognitoConfigError::IssuerParts(_))
        ));
        assert!(matches!(CognitoSettings::for_issuer("pool", &clients), Err(CognitoConfigError::IssuerUrl(..))));
        assert!(matches!(
            CognitoSettings::for_issuer("https://issuer.example/pool", &[]),
            Err(CognitoConfigError::NoClientIds)
        ));
        assert!(matches!(
            CognitoSettings::for_issuer("https://issuer.example/pool", &["a b".to_owned()]),
            Err(CognitoConfigError::ClientId(_))
        ));
    }

    #[test]
    fn values_from_a_token_are_quoted_and_cut_short_in_reasons() {
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        assert_eq!(shown(&"k".repeat(100)), format!("{:?}…", "k".repeat(64)));
    }
}
