//! The job endpoints beyond create and read (docs/api.md):
//!
//! - `GET /segments/{segmentType}?limit&cursor`: the caller's live jobs of the type, newest first;
//! - `GET /segments/{segmentType}/{jobId}/export`: 302 to a short-lived link of the whole result
//!   as NDJSON (400/404/422 like reading a page);
//! - `GET /usage?month=YYYY-MM`: completed jobs per segment type in the month.

use chrono::Utc;
use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use segments_core::http::{RequestTrace, json_response, path_param, problem_response, query_u32, segment_type_param};
use segments_core::ports::StoreError;
use segments_core::rules::body::FieldError;
use segments_core::usecases::jobs_api::{self, DEFAULT_LIST_LIMIT, JobsApiServices, MAX_LIST_LIMIT};
use segments_core::usecases::{AppError, Caller, authorize_segment_type};

pub async fn handle(s: &JobsApiServices, req: Request) -> Result<Response<Body>, lambda_http::Error> {
    let handling = async {
        Ok(match route(s, &req).await {
            Ok(response) => response,
            Err(e) => problem_response(&e),
        })
    };
    RequestTrace::of(&req).run(handling).await
}

/// The endpoint a request path names. The path may carry a stage prefix (`/dev/usage`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    List,
    Export { job_id: String },
    Usage,
}

fn endpoint(req: &Request) -> Option<Endpoint> {
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [.., "segments", _, job_id, "export"] => {
            Some(Endpoint::Export { job_id: path_param(req, "jobId").unwrap_or_else(|| (*job_id).to_owned()) })
        }
        [.., "segments", _] => Some(Endpoint::List),
        [.., "usage"] => Some(Endpoint::Usage),
        _ => None,
    }
}

/// A query parameter given at most once.
fn query_one(req: &Request, name: &str) -> Result<Option<String>, AppError> {
    let params = req.query_string_parameters_ref();
    match params.and_then(|p| p.all(name)) {
        None => Ok(None),
        Some(values) if values.len() == 1 => Ok(Some(values[0].to_owned())),
        Some(_) => Err(AppError::InvalidParameter(FieldError::new(name, "must be given at most once"))),
    }
}

async fn route(s: &JobsApiServices, req: &Request) -> Result<Response<Body>, AppError> {
    let endpoint = endpoint(req).ok_or(AppError::NoRoute)?;
    if req.method() != lambda_http::http::Method::GET {
        return Err(AppError::MethodNotAllowed);
    }
    let caller = Caller::from_request(req, &s.config)?;
    let now = Utc::now();
    match endpoint {
        Endpoint::List => {
            let segment_type = authorize_segment_type(&caller, &segment_type_param(req))?;
            let limit = query_u32(req, "limit", DEFAULT_LIST_LIMIT, 1, MAX_LIST_LIMIT)?;
            let cursor = query_one(req, "cursor")?;
            let list = jobs_api::list_jobs(s, &caller, segment_type, cursor.as_deref(), limit, now).await?;
            Ok(json_response(StatusCode::OK, &list))
        }
        Endpoint::Export { job_id } => {
            let segment_type = authorize_segment_type(&caller, &segment_type_param(req))?;
            let url = jobs_api::export_link(s, &caller, segment_type, &job_id, now).await?;
            let location = header::HeaderValue::from_str(&url).map_err(|_| {
                AppError::Unavailable(StoreError::Corrupt("the export link is not a valid header value".into()))
            })?;
            let mut response = Response::new(Body::Empty);
            *response.status_mut() = StatusCode::FOUND;
            response.headers_mut().insert(header::LOCATION, location);
            // The link is a credential for a few minutes: no cache may keep it.
            response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
            Ok(response)
        }
        Endpoint::Usage => {
            let month = query_one(req, "month")?;
            let report = jobs_api::usage(s, &caller, month.as_deref()).await?;
            Ok(json_response(StatusCode::OK, &report))
        }
    }
}

#[cfg(test)]
mod tests;
