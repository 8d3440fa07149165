use http::StatusCode;
use lambda_http::{Body, Response};
use serde::Serialize;

use crate::usecases::AppError;

/// An RFC 9457 problem: `type`, `title`, `status`, `detail`, a stable `code`, the offending
/// `field` where there is one, and the `instance`: the request it answers ([`problem_instance`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// The `instance` of a problem answering the request `request_id`: a URN beside the `type` URNs.
/// RFC 9457 makes `instance` a URI reference; the bare id would be a relative reference, which a
/// client resolves against the request's URL into an address that does not exist. The id itself
/// is the response's `X-Request-Id` header.
pub fn problem_instance(request_id: &str) -> String {
    format!("urn:financial-segments:request:{request_id}")
}

/// Every `code` a problem can carry: part of the API contract.
pub const PROBLEM_CODES: &[&str] = &[
    "unauthenticated",
    "insufficient_scope",
    "unknown_segment_type",
    "segment_type_not_available",
    "malformed_body",
    "body_too_large",
    "unsupported_media_type",
    "invalid_field",
    "invalid_parameter",
    "unknown_job",
    "not_ready",
    "job_failed",
    "idempotency_key_reused",
    "no_route",
    "method_not_allowed",
    "unavailable",
    "not_found",
    "segment_name_taken",
    "segment_conflict",
    "refresh_not_recorded",
    "unknown_accounts",
    "segment_not_taggable",
    "segment_has_no_rule",
    "import_conflict",
    "upload_missing",
    "account_held",
    "data_conflict",
    "too_many_jobs",
];

impl Problem {
    fn new(status: StatusCode, code: &'static str, title: &'static str, detail: String) -> Self {
        Problem {
            type_uri: format!("urn:financial-segments:problem:{code}"),
            title,
            status: status.as_u16(),
            detail,
            code,
            field: None,
            instance: None,
        }
    }

    fn with_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }
}

impl From<&AppError> for Problem {
    /// The one place where application errors become HTTP statuses.
    fn from(e: &AppError) -> Self {
        use StatusCode as S;
        let detail = e.to_string();
        match e {
            AppError::Unauthenticated => Problem::new(S::UNAUTHORIZED, "unauthenticated", "Unauthenticated", detail),
            AppError::MissingScope(_) => Problem::new(S::FORBIDDEN, "insufficient_scope", "Insufficient scope", detail),
            AppError::UnknownSegmentType(_) => {
                Problem::new(S::BAD_REQUEST, "unknown_segment_type", "Unknown segment type", detail)
                    .with_field("segmentType")
            }
            AppError::SegmentTypeNotAvailable(_) => {
                Problem::new(S::BAD_REQUEST, "segment_type_not_available", "Segment type not available", detail)
                    .with_field("segmentType")
            }
            AppError::MalformedBody(_) => {
                Problem::new(S::BAD_REQUEST, "malformed_body", "Malformed request body", detail)
            }
            AppError::BodyTooLarge(_) => {
                Problem::new(S::PAYLOAD_TOO_LARGE, "body_too_large", "Request body too large", detail)
            }
            AppError::UnsupportedMediaType => {
                Problem::new(S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Unsupported media type", detail)
            }
            AppError::InvalidField(f) => {
                Problem::new(S::BAD_REQUEST, "invalid_field", "Invalid field", detail).with_field(&f.field)
            }
            AppError::InvalidParameter(f) => {
                Problem::new(S::BAD_REQUEST, "invalid_parameter", "Invalid parameter", detail).with_field(&f.field)
            }
            AppError::UnknownJob => Problem::new(
                S::BAD_REQUEST,
                "unknown_job",
                "Unknown job",
                "no such job of this segment type (it may have expired)".to_owned(),
            ),
            AppError::NotReady { .. } => Problem::new(S::NOT_FOUND, "not_ready", "Result not ready", detail),
            AppError::JobFailed(_) => Problem::new(S::UNPROCESSABLE_ENTITY, "job_failed", "Job failed", detail),
            AppError::IdempotencyKeyReused => {
                Problem::new(S::CONFLICT, "idempotency_key_reused", "Idempotency key reused", detail)
                    .with_field("Idempotency-Key")
            }
            AppError::NoRoute => Problem::new(S::NOT_FOUND, "no_route", "Not found", detail),
            AppError::MethodNotAllowed => {
                Problem::new(S::METHOD_NOT_ALLOWED, "method_not_allowed", "Method not allowed", detail)
            }
            AppError::Unavailable(_) => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                "a backing service is unavailable; retry later".to_owned(),
            ),
            AppError::NotFound(_) => Problem::new(S::NOT_FOUND, "not_found", "Not found", detail),
            AppError::SegmentNameTaken(_) => {
                Problem::new(S::CONFLICT, "segment_name_taken", "Segment name taken", detail).with_field("name")
            }
            AppError::SegmentConflict => Problem::new(S::CONFLICT, "segment_conflict", "Concurrent change", detail),
            AppError::RefreshNotRecorded(_) => {
                Problem::new(S::CONFLICT, "refresh_not_recorded", "Refresh difference not recorded yet", detail)
            }
            AppError::UnknownAccounts(_) => {
                Problem::new(S::UNPROCESSABLE_ENTITY, "unknown_accounts", "Unknown accounts", detail).with_field("add")
            }
            AppError::SegmentNotTaggable(_) => {
                Problem::new(S::UNPROCESSABLE_ENTITY, "segment_not_taggable", "Segment not taggable", detail)
                    .with_field("status.code")
            }
            AppError::NoRule => {
                Problem::new(S::UNPROCESSABLE_ENTITY, "segment_has_no_rule", "Segment has no rule", detail)
                    .with_field("rule")
            }
            AppError::ImportConflict(_) => Problem::new(S::CONFLICT, "import_conflict", "Import conflict", detail),
            AppError::UploadMissing(file) => {
                Problem::new(S::BAD_REQUEST, "upload_missing", "Upload missing", detail).with_field(file)
            }
            AppError::AccountHeld { field, .. } => {
                Problem::new(S::CONFLICT, "account_held", "Account held by another user", detail).with_field(field)
            }
            AppError::DataConflict => Problem::new(S::CONFLICT, "data_conflict", "Concurrent writes", detail),
            AppError::TooManyJobs { .. } => {
                Problem::new(S::TOO_MANY_REQUESTS, "too_many_jobs", "Too many live jobs", detail)
            }
        }
    }
}

/// A problem+json response, its `instance` naming the request the current task handles (see
/// [`super::RequestTrace`]). A job that is not ready answers 404 with its status and progress
/// instead, so pollers can show progress (docs/api.md).
pub fn problem_response(e: &AppError) -> Response<Body> {
    if let AppError::NotReady { status, progress } = e {
        let body = serde_json::json!({ "status": status.as_str(), "progress": progress });
        return json_response(StatusCode::NOT_FOUND, &body);
    }
    if let AppError::Unavailable(source) = e {
        tracing::error!(error = %source, cause = ?std::error::Error::source(source), "backing service unavailable");
    }
    let mut problem = Problem::from(e);
    problem.instance = super::current_request_id().map(|id| problem_instance(&id));
    let body = serde_json::to_string(&problem).unwrap_or_default();
    let mut response =
        Response::builder().status(problem.status).header(http::header::CONTENT_TYPE, "application/problem+json");
    if let AppError::TooManyJobs { retry_after_seconds, .. } = e {
        // RFC 9110 §10.2.3: delay-seconds, so the client needs no clock agreement with us.
        response = response.header(http::header::RETRY_AFTER, retry_after_seconds.to_string());
    }
    response.body(Body::Text(body)).unwrap_or_default()
}

pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_string(value) {
        Ok(body) => Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::Text(body))
            .unwrap_or_default(),
        Err(e) => {
            tracing::error!(error = %e, "response serialization failed");
            Response::builder().status(StatusCode::INTERNAL_SERVER_ERROR).body(Body::Empty).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SegmentType;
    use crate::jobs::JobStatus;
    use crate::ports::StoreError;
    use crate::rules::body::FieldError;

    fn every_error() -> Vec<AppError> {
        vec![
            AppError::Unauthenticated,
            AppError::MissingScope("s".into()),
            AppError::UnknownSegmentType("x".into()),
            AppError::SegmentTypeNotAvailable(SegmentType::HighBalance),
            AppError::MalformedBody("m".into()),
            AppError::BodyTooLarge(1),
            AppError::UnsupportedMediaType,
            AppError::InvalidField(FieldError::new("f", "bad")),
            AppError::InvalidParameter(FieldError::new("p", "bad")),
            AppError::UnknownJob,
            AppError::NotReady {
                status: JobStatus::Queued,
                progress: crate::usecases::Progress { shards_done: 0, shards_total: 1 },
            },
            AppError::JobFailed("r".into()),
            AppError::IdempotencyKeyReused,
            AppError::NoRoute,
            AppError::MethodNotAllowed,
            AppError::Unavailable(StoreError::Corrupt("c".into())),
            AppError::NotFound("segment"),
            AppError::SegmentNameTaken("n".into()),
            AppError::SegmentConflict,
            AppError::RefreshNotRecorded("DIFFING"),
            AppError::UnknownAccounts(vec!["u/a".into()]),
            AppError::SegmentNotTaggable("INACTIVE".to_owned()),
            AppError::NoRule,
            AppError::ImportConflict("c".into()),
            AppError::UploadMissing("accounts.ndjson"),
            AppError::AccountHeld { account: "a".into(), field: "/accounts/0/accountId".into() },
            AppError::DataConflict,
            AppError::TooManyJobs { limit: 20, retry_after_seconds: 30 },
        ]
    }

    #[test]
    fn every_error_maps_to_a_listed_code_and_a_non_500_status() {
        let errors = every_error();
        let codes: Vec<&str> = errors.iter().map(|e| Problem::from(e).code).collect();
        assert_eq!(codes, PROBLEM_CODES);
        for e in &errors {
            let p = Problem::from(e);
            assert_ne!(p.status, 500, "{}", p.code);
            assert_eq!(p.type_uri, format!("urn:financial-segments:problem:{}", p.code));
        }
    }

    #[test]
    fn problems_are_problem_json_and_name_the_field() {
        let r = problem_response(&AppError::InvalidField(FieldError::new("threshold", "must be a decimal number")));
        assert_eq!(r.status(), 400);
        assert_eq!(r.headers()[http::header::CONTENT_TYPE], "application/problem+json");
        let Body::Text(body) = r.body() else { panic!("a text body") };
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["field"], "threshold");
        assert_eq!(v["detail"], "threshold must be a decimal number");
        assert!(v.get("instance").is_none(), "outside a request there is no instance: {v}");
    }

    #[test]
    fn too_many_jobs_is_429_with_retry_after_in_seconds() {
        let r = problem_response(&AppError::TooManyJobs { limit: 20, retry_after_seconds: 30 });
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[http::header::RETRY_AFTER], "30");
        assert_eq!(r.headers()[http::header::CONTENT_TYPE], "application/problem+json");
        let Body::Text(body) = r.body() else { panic!("a text body") };
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "too_many_jobs");
        assert_eq!(v["status"], 429);
        assert!(v["detail"].as_str().unwrap().contains("20 jobs"), "{v}");
        let other = problem_response(&AppError::IdempotencyKeyReused);
        assert!(other.headers().get(http::header::RETRY_AFTER).is_none());
    }

    #[tokio::test]
    async fn a_problem_inside_a_request_names_it_as_instance_and_in_the_header() {
        let mut req = crate::http::testing::create_job_request("highBalance", "{}", Some("bank-1"), &[]);
        if let Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) =
            lambda_http::RequestExt::request_context_ref(&req).cloned().as_mut()
        {
            ctx.request_id = Some("req-42".to_owned());
            req = lambda_http::RequestExt::with_request_context(
                req,
                lambda_http::request::RequestContext::ApiGatewayV2(ctx.clone()),
            );
        }
        let trace = super::super::RequestTrace::of(&req);
        assert_eq!(trace.id(), "req-42");
        let r = trace
            .run(async { Ok::<_, std::convert::Infallible>(problem_response(&AppError::UnknownJob)) })
            .await
            .unwrap();
        assert_eq!(r.headers()[super::super::REQUEST_ID_HEADER], "req-42");
        let Body::Text(body) = r.body() else { panic!("a text body") };
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["instance"], "urn:financial-segments:request:req-42");
    }
}
