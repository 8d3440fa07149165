//! `POST /segments/{segmentType}`: validates the body (docs/api.md), stores the job QUEUED and
//! enqueues one message per shard; answers `202 {jobId, status, expiresAt}`. With an
//! `Idempotency-Key` header, a repeat of the same request answers the same job (its current
//! status), and another request under the key answers 409.

use chrono::Utc;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use segments_core::domain::date::timestamp;
use segments_core::http::{RequestTrace, json_body, json_response, problem_response, segment_type_param};
use segments_core::usecases::create_job::{self, IDEMPOTENCY_KEY_HEADER, JobIntake};
use segments_core::usecases::{AppError, Caller, authorize_segment_type};

pub async fn handle(s: &JobIntake, req: Request) -> Result<Response<Body>, lambda_http::Error> {
    let handling = async {
        Ok(match create(s, &req).await {
            Ok(response) => response,
            Err(e) => problem_response(&e),
        })
    };
    RequestTrace::of(&req).run(handling).await
}

async fn create(s: &JobIntake, req: &Request) -> Result<Response<Body>, AppError> {
    let caller = Caller::from_request(req, &s.config)?;
    let segment_type = authorize_segment_type(&caller, &segment_type_param(req))?;
    let body = json_body(req)?;
    let key = match req.headers().get(IDEMPOTENCY_KEY_HEADER) {
        None => None,
        Some(value) => Some(create_job::parse_idempotency_key(value.to_str().map_err(|_| {
            AppError::InvalidParameter(segments_core::rules::body::FieldError::new(
                IDEMPOTENCY_KEY_HEADER,
                "must consist of visible ASCII characters",
            ))
        })?)?),
    };
    let job = create_job::create_job_with_key(s, &caller, segment_type, body, key.as_ref(), Utc::now()).await?;
    let answer = serde_json::json!({
        "jobId": job.job_id,
        "status": job.status.as_str(),
        "expiresAt": timestamp(job.expires_at),
    });
    let mut response = json_response(StatusCode::ACCEPTED, &answer);
    if let Ok(location) = format!("/segments/{}/{}", segment_type, job.job_id).parse() {
        response.headers_mut().insert(lambda_http::http::header::LOCATION, location);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use segments_core::config::ServiceConfig;
    use segments_core::domain::{JobId, MandatorId};
    use segments_core::http::testing::{create_job_request, status_and_json};
    use segments_core::jobs::JobStatus;
    use segments_core::usecases::Services;
    use segments_embedded::EmbeddedStore;
    use segments_embedded::wiring::services as embedded_services;

    const HB: &str = "segments/highBalance";

    async fn call(
        s: &Services,
        segment_type: &str,
        body: &str,
        mandator: Option<&str>,
        scopes: &[&str],
    ) -> (u16, serde_json::Value) {
        let response = handle(&s.intake(), create_job_request(segment_type, body, mandator, scopes)).await.unwrap();
        status_and_json(response)
    }

    fn services() -> (tempfile::TempDir, Services, tokio::sync::mpsc::UnboundedReceiver<segments_core::jobs::JobMessage>)
    {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let (s, rx) = embedded_services(store, ServiceConfig::default());
        (dir, s, rx)
    }

    #[tokio::test]
    async fn given_a_valid_body_when_posted_then_202_and_the_job_is_stored_queued_and_enqueued() {
        let (_dir, s, mut rx) = services();
        let (status, body) =
            call(&s, "highBalance", r#"{"accountType":"checking","threshold":5000}"#, Some("bank-1"), &[HB]).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["status"], "QUEUED");
        assert!(body["expiresAt"].as_str().unwrap().ends_with('Z'));
        let job_id = JobId::parse(body["jobId"].as_str().unwrap()).unwrap();
        let mandator = MandatorId::parse("bank-1").unwrap();
        let job = s.jobs.get(&mandator, job_id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Queued);
        let message = rx.try_recv().unwrap();
        assert_eq!((message.job_id, message.mandator_id), (job_id, mandator));
    }

    #[tokio::test]
    async fn bad_requests_are_clear_problems_never_500() {
        let (_dir, s, mut rx) = services();
        let ok = r#"{"accountType":"checking","threshold":5000}"#;
        // (type, body, mandator, scopes, status, code, field)
        type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a [&'a str], u16, &'a str, Option<&'a str>);
        let cases: &[Case] = &[
            ("highBalance", ok, None, &[HB], 401, "unauthenticated", None),
            ("highBalance", ok, Some("bank-1"), &["segments/lowBalance"], 403, "insufficient_scope", None),
            ("highbalance", ok, Some("bank-1"), &[HB], 400, "unknown_segment_type", Some("segmentType")),
            ("highBalance", "{\"accountType\":", Some("bank-1"), &[HB], 400, "malformed_body", None),
            (
                "highBalance",
                r#"{"accountType":"checking","threshold":"abc"}"#,
                Some("bank-1"),
                &[HB],
                400,
                "invalid_field",
                Some("threshold"),
            ),
            (
                "highBalance",
                r#"{"accountType":"checking","threshold":1e400}"#,
                Some("bank-1"),
                &[HB],
                400,
                "invalid_field",
                Some("threshold"),
            ),
            (
                "highBalance",
                r#"{"accountType":"checking","threshold":1,"x":1}"#,
                Some("bank-1"),
                &[HB],
                400,
                "invalid_field",
                Some("x"),
            ),
        ];
        for (t, body, mandator, scopes, status, code, field) in cases {
            let (got, problem) = call(&s, t, body, *mandator, scopes).await;
            assert_eq!(got, *status, "{t} {body}: {problem}");
            assert_eq!(problem["code"], *code, "{problem}");
            assert_eq!(problem["status"], *status);
            assert!(problem["type"].as_str().unwrap().ends_with(code));
            if let Some(field) = field {
                assert_eq!(problem["field"], *field, "{problem}");
            }
        }
        assert!(rx.try_recv().is_err(), "nothing may be enqueued for a refused request");
    }

    #[tokio::test]
    async fn unknown_type_problem_names_the_valid_types() {
        let (_dir, s, _rx) = services();
        let (_, problem) = call(&s, "mediumBalance", "{}", Some("bank-1"), &[HB]).await;
        let detail = problem["detail"].as_str().unwrap();
        for t in segments_core::domain::SegmentType::ALL {
            assert!(detail.contains(t.as_str()), "{detail}");
        }
    }

    #[tokio::test]
    async fn the_recorded_events_of_every_typed_and_catch_all_route_are_accepted() {
        let (_dir, s, mut rx) = services();
        let events = [
            include_str!("../../../events/create-job-high-balance.json"),
            include_str!("../../../events/create-job-low-balance.json"),
            include_str!("../../../events/create-job-income-spending-summary.json"),
            include_str!("../../../events/create-job-insurance-spending.json"),
            include_str!("../../../events/create-job-financial-breakdown.json"),
        ];
        for event in events {
            let req = lambda_http::request::from_str(event).unwrap();
            let (status, body) = status_and_json(handle(&s.intake(), req).await.unwrap());
            assert_eq!(status, 202, "{body}");
            assert!(rx.try_recv().is_ok());
        }
        let unknown =
            lambda_http::request::from_str(include_str!("../../../events/create-job-unknown-type.json")).unwrap();
        let (status, problem) = status_and_json(handle(&s.intake(), unknown).await.unwrap());
        assert_eq!((status, problem["code"].as_str()), (400, Some("unknown_segment_type")));
    }
}
