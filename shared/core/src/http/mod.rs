//! The API edge shared by the HTTP Lambda functions and the local runner: who is calling (from the
//! API Gateway JWT authorizer context), problem responses and JSON responses, and the trace of a
//! request ([`RequestTrace`]): its id in every log line, in the `X-Request-Id` header and in a
//! problem's `instance`.

mod caller;
mod problem;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use problem::{PROBLEM_CODES, Problem, json_response, problem_instance, problem_response};

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use tracing::Instrument;

use crate::rules::body::FieldError;
use crate::usecases::AppError;

/// Largest request body accepted (the biggest valid body is a few kilobytes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The body of a request as bytes, refusing oversized bodies and non-JSON content types.
pub fn json_body(req: &Request) -> Result<&[u8], AppError> {
    json_body_up_to(req, MAX_BODY_BYTES)
}

/// [`json_body`] for the routes that take more than [`MAX_BODY_BYTES`] (account data).
pub fn json_body_up_to(req: &Request, max_bytes: usize) -> Result<&[u8], AppError> {
    if let Some(ct) = req.headers().get(http::header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if !(essence == "application/json" || essence.ends_with("+json")) {
            return Err(AppError::UnsupportedMediaType);
        }
    }
    let bytes: &[u8] = match req.body() {
        Body::Empty => &[],
        Body::Text(s) => s.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    };
    if bytes.len() > max_bytes {
        return Err(AppError::BodyTooLarge(max_bytes));
    }
    Ok(bytes)
}

/// A path parameter set by the route (`{segmentType}`, `{jobId}`).
pub fn path_param(req: &Request, name: &str) -> Option<String> {
    req.path_parameters_ref().and_then(|p| p.first(name)).map(str::to_owned)
}

/// The segment type of a financial-segments request. The catch-all routes carry it as the
/// `{segmentType}` path parameter; the typed routes (`/segments/highBalance`, …), which exist so
/// API Gateway can require each type's scope, carry it only in the path: the segment after
/// `segments`.
pub fn segment_type_param(req: &Request) -> String {
    if let Some(t) = path_param(req, "segmentType") {
        return t;
    }
    let mut parts = req.uri().path().split('/');
    while let Some(part) = parts.next() {
        if part == "segments" {
            return parts.next().unwrap_or_default().to_owned();
        }
    }
    String::new()
}

/// An optional positive integer query parameter within `min..=max`.
pub fn query_u32(req: &Request, name: &str, default: u32, min: u32, max: u32) -> Result<u32, AppError> {
    let params = req.query_string_parameters_ref();
    let Some(values) = params.and_then(|p| p.all(name)) else { return Ok(default) };
    let invalid =
        || AppError::InvalidParameter(FieldError::new(name, format!("must be an integer from {min} to {max}")));
    if values.len() != 1 {
        return Err(AppError::InvalidParameter(FieldError::new(name, "must be given at most once")));
    }
    let n: u32 = values[0].trim().parse().map_err(|_| invalid())?;
    if (min..=max).contains(&n) { Ok(n) } else { Err(invalid()) }
}

/// The response header that carries the request id, for a client to quote in a problem report.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    /// The request being handled by the current task.
    static CURRENT_REQUEST: RequestTrace;
}

/// One API request's trace: API Gateway's id of the request (`requestContext.requestId`, which
/// its access log records too) and the `request` span that carries it as `requestId`, and the
/// caller's mandator as `mandator` once known, into every log line of the handling.
#[derive(Debug, Clone)]
pub struct RequestTrace {
    id: String,
    span: tracing::Span,
}

impl RequestTrace {
    /// The trace of `req`. A request without an id (only a hand-built one: API Gateway and the
    /// local runner always set it) gets a fresh one, so every answer can still be quoted.
    pub fn of(req: &Request) -> Self {
        let id = request_id(req).unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let span = tracing::info_span!("request", requestId = %id, mandator = tracing::field::Empty);
        RequestTrace { id, span }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs the handling of the request inside its span, with the trace as the task's current
    /// request (for [`record_mandator`] and a problem's `instance`), and puts the id on the
    /// response.
    pub async fn run<E>(self, handling: impl Future<Output = Result<Response<Body>, E>>) -> Result<Response<Body>, E> {
        let span = self.span.clone();
        let id = self.id.clone();
        let mut response = CURRENT_REQUEST.scope(self, handling.instrument(span)).await?;
        if let Ok(value) = http::HeaderValue::from_str(&id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        Ok(response)
    }
}

/// API Gateway's id of the request, from its request context.
pub fn request_id(req: &Request) -> Option<String> {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
        _ => None,
    }
    .filter(|id| !id.is_empty())
}

/// The id of the request the current task handles, if it handles one.
pub fn current_request_id() -> Option<String> {
    CURRENT_REQUEST.try_with(|request| request.id.clone()).ok()
}

/// Records the caller's mandator on the current request's span, so the log lines from here on
/// carry it. Nothing outside a request.
pub fn record_mandator(mandator: &crate::domain::MandatorId) {
    let _ = CURRENT_REQUEST.try_with(|request| {
        request.span.record("mandator", mandator.as_str());
    });
}
