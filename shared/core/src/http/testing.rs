//! Helpers for tests of the handlers: API Gateway v2 requests built from the recorded event in
//! `events/`, with the authorizer context, path, query and body a test needs.

use lambda_http::Request;
use serde_json::{Value, json};

const API_EVENT: &str = include_str!("../../../../events/create-job-high-balance.json");

/// What an API Gateway request should carry.
#[derive(Debug, Clone, Default)]
pub struct ApiRequest<'a> {
    pub method: &'a str,
    pub path: String,
    pub route_key: &'a str,
    pub path_params: Vec<(&'a str, String)>,
    pub query: Vec<(&'a str, &'a str)>,
    pub body: Option<String>,
    /// `None`: no authorizer context at all.
    pub mandator: Option<&'a str>,
    pub scopes: Vec<String>,
}

impl ApiRequest<'_> {
    pub fn build(&self) -> Request {
        let mut event: Value = serde_json::from_str(API_EVENT).expect("the recorded event is JSON");
        event["routeKey"] = json!(self.route_key);
        event["rawPath"] = json!(self.path);
        event["requestContext"]["routeKey"] = json!(self.route_key);
        event["requestContext"]["http"]["method"] = json!(self.method);
        event["requestContext"]["http"]["path"] = json!(self.path);
        event["pathParameters"] = self.path_params.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
        event["rawQueryString"] =
            json!(self.query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&"));
        event["queryStringParameters"] = self.query.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
        match &self.body {
            Some(b) => event["body"] = json!(b),
            None => {
                if let Some(o) = event.as_object_mut() {
                    o.remove("body");
                }
            }
        }
        match self.mandator {
            Some(m) => {
                event["requestContext"]["authorizer"]["jwt"]["claims"]["client_id"] = json!(m);
                event["requestContext"]["authorizer"]["jwt"]["claims"]["scope"] = json!(self.scopes.join(" "));
                event["requestContext"]["authorizer"]["jwt"]["scopes"] = json!(self.scopes);
            }
            None => {
                if let Some(ctx) = event["requestContext"].as_object_mut() {
                    ctx.remove("authorizer");
                }
            }
        }
        lambda_http::request::from_str(&event.to_string()).expect("a valid API Gateway v2 event")
    }
}

/// `POST /segments/{segmentType}` by `mandator` with `scopes`.
pub fn create_job_request(segment_type: &str, body: &str, mandator: Option<&str>, scopes: &[&str]) -> Request {
    ApiRequest {
        method: "POST",
        path: format!("/segments/{segment_type}"),
        route_key: "POST /segments/{segmentType}",
        path_params: vec![("segmentType", segment_type.to_owned())],
        body: Some(body.to_owned()),
        mandator,
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
    .build()
}

/// `GET /segments/{segmentType}/{jobId}?…` by `mandator` with `scopes`.
pub fn get_result_request<'a>(
    segment_type: &str,
    job_id: &str,
    query: &[(&'a str, &'a str)],
    mandator: Option<&'a str>,
    scopes: &[&str],
) -> Request {
    ApiRequest {
        method: "GET",
        path: format!("/segments/{segment_type}/{job_id}"),
        route_key: "GET /segments/{segmentType}/{jobId}",
        path_params: vec![("segmentType", segment_type.to_owned()), ("jobId", job_id.to_owned())],
        query: query.to_vec(),
        body: None,
        mandator,
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
    }
    .build()
}

/// Status and JSON body of a handler's response.
pub fn status_and_json(response: lambda_http::Response<lambda_http::Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: &[u8] = match response.body() {
        lambda_http::Body::Text(t) => t.as_bytes(),
        lambda_http::Body::Binary(b) => b,
        _ => b"null",
    };
    (status, serde_json::from_slice(body).unwrap_or(Value::Null))
}
