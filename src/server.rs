//! The local HTTP front: plays API Gateway (HTTP API, JWT authorizer, payload v2) for the same
//! handler code the Lambdas run. Requests become `lambda_http` requests with path parameters,
//! query parameters and an authorizer context; responses go back unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body as AxumBody, to_bytes};
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use lambda_http::request::RequestContext;
use lambda_http::{Body, RequestExt};
use segments_core::http::{MAX_BODY_BYTES, problem_response};
use segments_core::usecases::account_data::AccountData;
use segments_core::usecases::imports_api::ImportsApi;
use segments_core::usecases::jobs_api::JobsApiServices;
use segments_core::usecases::segments::SegmentsServices;
use segments_core::usecases::{AppError, Services};
use segments_embedded::{LinkError, LocalLinks};

use crate::token::{BearerVerifier, Signer};

/// The runner's API Gateway: the functions' services, and `V`, what checks the bearer tokens
/// before a function sees a request (its JWT authorizer).
pub struct Gateway<V = Signer> {
    pub services: Services,
    /// The segments API's services (the same job services plus the segment store).
    pub segments: SegmentsServices,
    /// The job list, export and usage services (the same job services plus the catalog and links).
    pub jobs_api: JobsApiServices,
    /// The data API's users and segments (the same stores).
    pub data: AccountData,
    /// The data API's bulk imports: records, upload links, the import queue.
    pub imports: ImportsApi,
    /// The export links this runner serves itself (embedded store); `None` with `--aws`, whose
    /// links are presigned S3 URLs.
    pub links: Option<Arc<LocalLinks>>,
    /// Checks bearer tokens: the data directory's [`Signer`] (development tokens), or a
    /// [`crate::cognito::CognitoVerifier`] (a user pool's access tokens).
    pub verifier: V,
}

/// The Lambda function a route invokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    CreateJob,
    GetResult,
    SegmentsApi,
    JobsApi,
    DataApi,
}

impl Function {
    /// The largest body the function accepts. API Gateway passes bodies of up to 10 MB on and the
    /// function refuses larger ones itself; the runner reads no more than one byte beyond.
    fn max_body_bytes(self) -> usize {
        match self {
            Function::DataApi => segments_core::usecases::account_data::body::MAX_BODY_BYTES,
            Function::CreateJob | Function::GetResult | Function::SegmentsApi | Function::JobsApi => MAX_BODY_BYTES,
        }
    }
}

/// A route of the API, as API Gateway and the OpenAPI document declare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub function: Function,
}

/// Every route the service serves (a test keeps `infra/openapi.json` in step with it).
pub const ROUTES: &[Route] = &[
    Route { method: "POST", path: "/segments/{segmentType}", function: Function::CreateJob },
    Route { method: "GET", path: "/segments/{segmentType}/{jobId}", function: Function::GetResult },
    Route { method: "GET", path: "/segments/{segmentType}", function: Function::JobsApi },
    Route { method: "GET", path: "/segments/{segmentType}/{jobId}/export", function: Function::JobsApi },
    Route { method: "GET", path: "/usage", function: Function::JobsApi },
    // The segments management API, at organization and at ledger level.
    Route { method: "POST", path: ORG_SEGMENTS, function: Function::SegmentsApi },
    Route { method: "GET", path: ORG_SEGMENTS, function: Function::SegmentsApi },
    Route {
        method: "HEAD",
        path: "/v1/organizations/{organizationId}/segments/metrics/count",
        function: Function::SegmentsApi,
    },
    Route { method: "GET", path: ORG_SEGMENT, function: Function::SegmentsApi },
    Route { method: "PATCH", path: ORG_SEGMENT, function: Function::SegmentsApi },
    Route { method: "DELETE", path: ORG_SEGMENT, function: Function::SegmentsApi },
    Route {
        method: "GET",
        path: "/v1/organizations/{organizationId}/segments/{segmentId}/accounts",
        function: Function::SegmentsApi,
    },
    Route {
        method: "PUT",
        path: "/v1/organizations/{organizationId}/segments/{segmentId}/accounts",
        function: Function::SegmentsApi,
    },
    Route {
        method: "POST",
        path: "/v1/organizations/{organizationId}/segments/{segmentId}/refresh",
        function: Function::SegmentsApi,
    },
    Route {
        method: "GET",
        path: "/v1/organizations/{organizationId}/segments/{segmentId}/refreshes",
        function: Function::SegmentsApi,
    },
    Route {
        method: "GET",
        path: "/v1/organizations/{organizationId}/segments/{segmentId}/refreshes/{refreshId}",
        function: Function::SegmentsApi,
    },
    Route {
        method: "GET",
        path: "/v1/organizations/{organizationId}/segments/{segmentId}/refreshes/{refreshId}/changes",
        function: Function::SegmentsApi,
    },
    Route { method: "POST", path: LEDGER_SEGMENTS, function: Function::SegmentsApi },
    Route { method: "GET", path: LEDGER_SEGMENTS, function: Function::SegmentsApi },
    Route {
        method: "HEAD",
        path: "/v1/organizations/{organizationId}/ledgers/{ledgerId}/segments/metrics/count",
        function: Function::SegmentsApi,
    },
    Route { method: "GET", path: LEDGER_SEGMENT, function: Function::SegmentsApi },
    Route { method: "PATCH", path: LEDGER_SEGMENT, function: Function::SegmentsApi },
    Route { method: "DELETE", path: LEDGER_SEGMENT, function: Function::SegmentsApi },
    Route {
        method: "GET",
        path: "/v1/organizations/{organizationId}/ledgers/{ledgerId}/segments/{segmentId}/accounts",
        function: Function::SegmentsApi,
    },
    Route {
        method: "PUT",
        path: "/v1/organizations/{organizationId}/ledgers/{ledgerId}/segments/{segmentId}/accounts",
        function: Function::SegmentsApi,
    },
    Route {
        method: "POST",
        path: "/v1/organizations/{organizationId}/ledgers/{ledgerId}/segments/{segmentId}/refresh",
        function: Function::SegmentsApi,
    },
    Route {
        method: "GET",
        path: "/v1/organizations/{organizationId}/ledgers/{ledgerId}/segments/{segmentId}/refreshes",
        function: Function::SegmentsApi,
    },
    Route {
        method: "GET",
        path: "/v1/organizations/{organizationId}/ledgers/{ledgerId}/segments/{segmentId}/refreshes/{refreshId}",
        function: Function::SegmentsApi,
    },
    Route {
        method: "GET",
        path: "/v1/organizations/{organizationId}/ledgers/{ledgerId}/segments/{segmentId}/refreshes/{refreshId}/changes",
        function: Function::SegmentsApi,
    },
    Route {
        method: "GET",
        path: "/v1/organizations/{organizationId}/accounts/{accountId}/segments",
        function: Function::SegmentsApi,
    },
    // A user's account data.
    Route { method: "PUT", path: DATA_USER, function: Function::DataApi },
    Route { method: "PATCH", path: DATA_USER, function: Function::DataApi },
    Route { method: "GET", path: DATA_USER, function: Function::DataApi },
    Route { method: "DELETE", path: DATA_USER, function: Function::DataApi },
    // Bulk imports of account data.
    Route { method: "POST", path: "/data/imports", function: Function::DataApi },
    Route { method: "POST", path: "/data/imports/{importId}/start", function: Function::DataApi },
    Route { method: "GET", path: "/data/imports/{importId}", function: Function::DataApi },
];

const ORG_SEGMENTS: &str = "/v1/organizations/{organizationId}/segments";
const ORG_SEGMENT: &str = "/v1/organizations/{organizationId}/segments/{segmentId}";
const LEDGER_SEGMENTS: &str = "/v1/organizations/{organizationId}/ledgers/{ledgerId}/segments";
const LEDGER_SEGMENT: &str = "/v1/organizations/{organizationId}/ledgers/{ledgerId}/segments/{segmentId}";
const DATA_USER: &str = "/data/users/{userId}";

pub fn router<V: BearerVerifier>(gateway: Arc<Gateway<V>>) -> Router {
    let mut router = Router::new();
    for route in ROUTES {
        let function = route.function;
        let handler = move |s, r| invoke(s, r, function);
        let filter = match route.method {
            "POST" => MethodFilter::POST,
            "PUT" => MethodFilter::PUT,
            "PATCH" => MethodFilter::PATCH,
            "DELETE" => MethodFilter::DELETE,
            "HEAD" => MethodFilter::HEAD,
            _ => MethodFilter::GET,
        };
        router = router.route(route.path, on(filter, handler));
    }
    router
        .route(&format!("{}{{*key}}", segments_embedded::LINK_PATH), axum::routing::get(serve_link))
        .route(&format!("{}{{*key}}", segments_embedded::UPLOAD_PATH), axum::routing::put(receive_upload))
        // The console's files need no token (the console function runs without an authorizer).
        .route(web_console::BASE_PATH, axum::routing::any(serve_console))
        .route(&format!("{}/", web_console::BASE_PATH), axum::routing::any(serve_console))
        .route(&format!("{}/{{*file}}", web_console::BASE_PATH), axum::routing::any(serve_console))
        .fallback(|| async { to_axum(problem_response(&AppError::NoRoute)) })
        .method_not_allowed_fallback(|| async { to_axum(problem_response(&AppError::MethodNotAllowed)) })
        .with_state(gateway)
}

async fn invoke<V: BearerVerifier>(State(gw): State<Arc<Gateway<V>>>, req: Request, function: Function) -> Response {
    match to_lambda(&gw, req, function.max_body_bytes()).await {
        Ok(event) => {
            let result = match function {
                Function::CreateJob => create_job::handle(&gw.services.intake(), event).await,
                Function::GetResult => get_result::handle(&gw.services.reader(), event).await,
                Function::SegmentsApi => segments_api::handle(&gw.segments, event).await,
                Function::JobsApi => jobs_api::handle(&gw.jobs_api, event).await,
                Function::DataApi => data_api::handle_all(&gw.data, &gw.imports, &gw.services.config, event).await,
            };
            match result {
                Ok(response) => to_axum(response),
                Err(e) => {
                    tracing::error!(error = %e, "handler failed");
                    (http::StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
                }
            }
        }
        Err(e) => to_axum(problem_response(&e)),
    }
}

/// Serves the console exactly as its function does behind API Gateway, with token sign-in.
async fn serve_console(req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let request = http::Request::from_parts(parts, Body::Empty);
    to_axum(web_console::respond(&web_console::ConsoleConfig::token(), &request))
}

/// Serves an object behind a signed export link (what S3 does for a presigned URL): no bearer
/// token, the link's signature and expiry are the credential.
async fn serve_link<V: BearerVerifier>(
    State(gw): State<Arc<Gateway<V>>>,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    use http::StatusCode;
    let Some(links) = &gw.links else { return (StatusCode::NOT_FOUND, "not found").into_response() };
    let part = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    match links.open(&key, part("expires"), part("signature"), chrono::Utc::now()).await {
        Ok(stream) => Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/x-ndjson")
            .header(http::header::CACHE_CONTROL, "no-store")
            .body(AxumBody::from_stream(stream))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Err(LinkError::Invalid | LinkError::Expired) => {
            (StatusCode::FORBIDDEN, "the link is invalid or has expired").into_response()
        }
        Err(LinkError::Missing) => (StatusCode::NOT_FOUND, "the object no longer exists").into_response(),
        Err(LinkError::Interrupted(_)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "reading the object failed").into_response()
        }
        Err(LinkError::Store(e)) => {
            tracing::error!(error = %e, "serving an export link failed");
            (StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable").into_response()
        }
    }
}

/// Takes the body of a PUT to a signed upload link (what S3 does for a presigned PUT): no bearer
/// token, the link is the credential. The body is streamed into the store; nothing is stored
/// unless it arrives whole.
async fn receive_upload<V: BearerVerifier>(
    State(gw): State<Arc<Gateway<V>>>,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: AxumBody,
) -> Response {
    use http::StatusCode;
    let Some(links) = &gw.links else { return (StatusCode::NOT_FOUND, "not found").into_response() };
    let part = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    let pieces = body.into_data_stream();
    match links.receive(&key, part("expires"), part("signature"), chrono::Utc::now(), pieces).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(LinkError::Invalid | LinkError::Expired) => {
            (StatusCode::FORBIDDEN, "the link is invalid or has expired").into_response()
        }
        Err(LinkError::Interrupted(e)) => {
            (StatusCode::BAD_REQUEST, format!("the upload was interrupted: {e}")).into_response()
        }
        Err(LinkError::Missing) => (StatusCode::NOT_FOUND, "not found").into_response(),
        Err(LinkError::Store(e)) => {
            tracing::error!(error = %e, "storing an upload failed");
            (StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable").into_response()
        }
    }
}

/// Builds the request API Gateway would hand the Lambda: the bearer token verified (401 problem
/// otherwise, like the gateway's authorizer), its claims and scopes in the authorizer context.
/// Why a token was refused is logged, never answered, and the token itself never logged.
async fn to_lambda<V: BearerVerifier>(
    gw: &Gateway<V>,
    req: Request,
    max_body_bytes: usize,
) -> Result<lambda_http::Request, AppError> {
    let bearer = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| {
            tracing::warn!(path = %req.uri().path(), "request refused: no bearer token in the Authorization header");
            AppError::Unauthenticated
        })?;
    let verified = gw.verifier.verify_bearer(bearer).await.map_err(|reason| {
        tracing::warn!(path = %req.uri().path(), %reason, "bearer token refused");
        AppError::Unauthenticated
    })?;

    let path_params: HashMap<String, String> = match_path(req.uri().path());
    let query: HashMap<String, Vec<String>> = {
        let mut q: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in form_urlencoded(req.uri().query().unwrap_or_default()) {
            q.entry(k).or_default().push(v);
        }
        q
    };
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let context: lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext =
        serde_json::from_value(serde_json::json!({
            "routeKey": format!("{method} {path}"),
            "accountId": "000000000000",
            "stage": "$default",
            "requestId": uuid_like(),
            "apiId": "local",
            "domainName": "127.0.0.1",
            "domainPrefix": "local",
            "timeEpoch": chrono::Utc::now().timestamp_millis(),
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": ""},
            "authorizer": {"jwt": {"claims": verified.claims, "scopes": verified.scopes}},
        }))
        .map_err(|e| AppError::MalformedBody(format!("cannot build the request context: {e}")))?;

    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, max_body_bytes + 1).await.map_err(|_| AppError::BodyTooLarge(max_body_bytes))?;
    let body = if bytes.is_empty() {
        Body::Empty
    } else {
        match String::from_utf8(bytes.to_vec()) {
            Ok(text) => Body::Text(text),
            Err(e) => Body::Binary(e.into_bytes()),
        }
    };
    Ok(http::Request::from_parts(parts, body)
        .with_path_parameters(path_params)
        .with_query_string_parameters(query)
        .with_request_context(RequestContext::ApiGatewayV2(context)))
}

/// Path parameters of the routes above, named as in the SAM template.
fn match_path(path: &str) -> HashMap<String, String> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut params = HashMap::new();
    if parts.len() >= 3 && parts[0] == "v1" && parts[1] == "organizations" {
        params.insert("organizationId".to_owned(), percent_decode(parts[2]));
        let mut rest = &parts[3..];
        if rest.len() >= 2 && rest[0] == "ledgers" {
            params.insert("ledgerId".to_owned(), percent_decode(rest[1]));
            rest = &rest[2..];
        }
        match rest {
            // `metrics/count` is a literal route, not a segment id.
            ["segments", "metrics", "count"] => {}
            ["segments", id, rest @ ..] => {
                params.insert("segmentId".to_owned(), percent_decode(id));
                if let ["refreshes", refresh, ..] = rest {
                    params.insert("refreshId".to_owned(), percent_decode(refresh));
                }
            }
            ["accounts", id, ..] => {
                params.insert("accountId".to_owned(), percent_decode(id));
            }
            _ => {}
        }
        return params;
    }
    if let ["data", "users", user] = parts.as_slice() {
        params.insert("userId".to_owned(), percent_decode(user));
        return params;
    }
    if let ["data", "imports", import, ..] = parts.as_slice() {
        params.insert("importId".to_owned(), percent_decode(import));
        return params;
    }
    if parts.first() == Some(&"segments") {
        if let Some(t) = parts.get(1) {
            params.insert("segmentType".to_owned(), percent_decode(t));
        }
        if let Some(j) = parts.get(2) {
            params.insert("jobId".to_owned(), percent_decode(j));
        }
    }
    params
}

fn form_urlencoded(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(&k.replace('+', " ")), percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn uuid_like() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn to_axum(response: lambda_http::Response<Body>) -> Response {
    let (parts, body) = response.into_parts();
    let body = match body {
        Body::Empty => AxumBody::empty(),
        Body::Text(t) => AxumBody::from(t),
        Body::Binary(b) => AxumBody::from(b),
        _ => AxumBody::empty(),
    };
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_and_path() {
        assert_eq!(
            form_urlencoded("page=2&perPage=%35&x"),
            vec![("page".into(), "2".into()), ("perPage".into(), "5".into()), ("x".into(), "".into())]
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        let p = match_path("/segments/highBalance/abc");
        assert_eq!(p["segmentType"], "highBalance");
        assert_eq!(p["jobId"], "abc");
        let p = match_path("/v1/organizations/bank-1/ledgers/l1/segments/0190/accounts");
        assert_eq!(
            (p["organizationId"].as_str(), p["ledgerId"].as_str(), p["segmentId"].as_str()),
            ("bank-1", "l1", "0190")
        );
        let p = match_path("/v1/organizations/bank-1/segments/metrics/count");
        assert!(!p.contains_key("segmentId"));
        let p = match_path("/v1/organizations/bank-1/segments/0190/refreshes/0193/changes");
        assert_eq!((p["segmentId"].as_str(), p["refreshId"].as_str()), ("0190", "0193"));
        assert!(!match_path("/v1/organizations/bank-1/segments/0190/refreshes").contains_key("refreshId"));
        assert_eq!(match_path("/v1/organizations/bank-1/accounts/a%2B1/segments")["accountId"], "a+1");
        assert_eq!(match_path("/data/users/u%2B1")["userId"], "u+1");
        assert_eq!(match_path("/data/imports/0193/start")["importId"], "0193");
        assert!(match_path("/data/imports").is_empty());
    }
}
