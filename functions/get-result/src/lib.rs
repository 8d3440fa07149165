//! `GET /segments/{segmentType}/{jobId}?page&perPage`: 404 while the job runs (with progress),
//! 400 for an unknown, expired, other mandator's or other type's job, 422 when it failed, 200 with
//! a page of the result.

use chrono::Utc;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use segments_core::http::{RequestTrace, json_response, path_param, problem_response, query_u32, segment_type_param};
use segments_core::jobs::MAX_PER_PAGE;
use segments_core::usecases::read_result::{ResultReader, get_result};
use segments_core::usecases::{AppError, Caller, authorize_segment_type};

pub const DEFAULT_PER_PAGE: u32 = 20;

pub async fn handle(s: &ResultReader, req: Request) -> Result<Response<Body>, lambda_http::Error> {
    let handling = async {
        Ok(match get(s, &req).await {
            Ok(response) => response,
            Err(e) => problem_response(&e),
        })
    };
    RequestTrace::of(&req).run(handling).await
}

async fn get(s: &ResultReader, req: &Request) -> Result<Response<Body>, AppError> {
    let caller = Caller::from_request(req, &s.config)?;
    let segment_type = authorize_segment_type(&caller, &segment_type_param(req))?;
    let page = query_u32(req, "page", 1, 1, u32::MAX)?;
    let per_page = query_u32(req, "perPage", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)?;
    let job_id = path_param(req, "jobId").unwrap_or_default();
    let result = get_result(s, &caller, segment_type, &job_id, page, per_page, Utc::now()).await?;
    Ok(json_response(StatusCode::OK, &result))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, NaiveDate};
    use segments_core::config::ServiceConfig;
    use segments_core::domain::{AccountType, MandatorId, Money};
    use segments_core::http::testing::{get_result_request, status_and_json};
    use segments_core::jobs::Job;
    use segments_core::rules::SegmentParams;
    use segments_core::rules::params::HighBalanceParams;
    use segments_core::usecases::Services;
    use segments_core::usecases::read_result::write_result;
    use segments_embedded::EmbeddedStore;
    use segments_embedded::wiring::services as embedded_services;

    const HB: &str = "segments/highBalance";

    struct Fixture {
        _dir: tempfile::TempDir,
        s: Services,
    }

    fn fixture(chunk_size: u32) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let config = ServiceConfig { chunk_size, ..ServiceConfig::default() };
        let (s, _rx) = embedded_services(store, config);
        Fixture { _dir: dir, s }
    }

    fn job(mandator: &str, created: chrono::DateTime<Utc>) -> Job {
        let params = SegmentParams::HighBalance(HighBalanceParams {
            account_type: AccountType::Checking,
            threshold: Money::from_cents(500_000),
            currency: None,
        });
        let as_of = NaiveDate::from_ymd_opt(2024, 6, 30).unwrap();
        Job::new(MandatorId::parse(mandator).unwrap(), as_of, params, None, 4, created)
    }

    /// A completed job whose result has `users` users.
    async fn completed(f: &Fixture, mandator: &str, users: usize) -> Job {
        let mut job = job(mandator, Utc::now());
        f.s.jobs.create(&job).await.unwrap();
        let lines: Vec<String> = (0..users)
            .map(|i| format!(r#"{{"userId":"user-{i:05}","accounts":[{{"accountId":"a","amount":5000.01}}]}}"#))
            .collect();
        let summary = write_result(f.s.results.as_ref(), &job, &lines, f.s.config.chunk_size).await.unwrap();
        assert!(f.s.jobs.complete(&job, summary).await.unwrap());
        job.result = Some(summary);
        job
    }

    async fn get(
        f: &Fixture,
        t: &str,
        job_id: &str,
        query: &[(&str, &str)],
        mandator: &str,
    ) -> (u16, serde_json::Value) {
        status_and_json(
            handle(&f.s.reader(), get_result_request(t, job_id, query, Some(mandator), &[HB])).await.unwrap(),
        )
    }

    #[tokio::test]
    async fn given_a_queued_job_then_404_with_status_and_progress() {
        let f = fixture(1000);
        let job = job("bank-1", Utc::now());
        f.s.jobs.create(&job).await.unwrap();
        let (status, body) = get(&f, "highBalance", &job.job_id.to_string(), &[], "bank-1").await;
        assert_eq!(status, 404);
        assert_eq!(body, serde_json::json!({"status": "QUEUED", "progress": {"shardsDone": 0, "shardsTotal": 4}}));
        f.s.jobs.mark_running(&job.mandator_id, job.job_id).await.unwrap();
        for shard in [0, 2, 3, 2] {
            f.s.jobs.record_shard(&job.mandator_id, job.job_id, shard).await.unwrap();
        }
        let (_, body) = get(&f, "highBalance", &job.job_id.to_string(), &[], "bank-1").await;
        assert_eq!(body, serde_json::json!({"status": "RUNNING", "progress": {"shardsDone": 3, "shardsTotal": 4}}));
    }

    #[tokio::test]
    async fn given_a_completed_job_then_pages_are_served_across_chunk_boundaries() {
        let f = fixture(500);
        let job = completed(&f, "bank-1", 1234).await;
        let id = job.job_id.to_string();
        let (status, body) = get(&f, "highBalance", &id, &[("page", "2"), ("perPage", "400")], "bank-1").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["totalElements"], 1234);
        assert_eq!(body["totalPages"], 4);
        assert_eq!(body["page"], 2);
        assert_eq!(body["perPage"], 400);
        let users = body["users"].as_array().unwrap();
        assert_eq!(users.len(), 400);
        assert_eq!(users[0]["userId"], "user-00400");
        assert_eq!(users[399]["userId"], "user-00799");
        assert_eq!(users[0]["accounts"][0]["amount"].to_string(), "5000.01");
        assert_eq!(body["parameters"].to_string(), r#"{"accountType":"checking","threshold":5000.00}"#);
        assert_eq!(body["asOf"], "2024-06-30");
        assert!(body.get("durationInMonth").is_none());

        let (_, last) = get(&f, "highBalance", &id, &[("page", "4"), ("perPage", "400")], "bank-1").await;
        assert_eq!(last["users"].as_array().unwrap().len(), 34);
        let (status, past) = get(&f, "highBalance", &id, &[("page", "5"), ("perPage", "400")], "bank-1").await;
        assert_eq!(status, 200);
        assert_eq!(past["users"], serde_json::json!([]));
        let (_, default) = get(&f, "highBalance", &id, &[], "bank-1").await;
        assert_eq!((default["page"].as_u64(), default["perPage"].as_u64()), (Some(1), Some(20)));
    }

    #[tokio::test]
    async fn unknown_expired_foreign_and_other_type_jobs_are_400_without_telling_which() {
        let f = fixture(1000);
        let job = completed(&f, "bank-1", 3).await;
        let id = job.job_id.to_string();
        let mut expired = self::job("bank-1", Utc::now() - Duration::days(15));
        expired.status = segments_core::jobs::JobStatus::Queued;
        f.s.jobs.create(&expired).await.unwrap();
        let cases = [
            ("highBalance", id.clone(), "bank-2"),
            ("highBalance", segments_core::domain::JobId::new().to_string(), "bank-1"),
            ("highBalance", "not-a-uuid".to_owned(), "bank-1"),
            ("highBalance", expired.job_id.to_string(), "bank-1"),
        ];
        for (t, job_id, mandator) in cases {
            let (status, problem) = get(&f, t, &job_id, &[], mandator).await;
            assert_eq!((status, problem["code"].as_str()), (400, Some("unknown_job")), "{job_id} {mandator}");
        }
        let req = get_result_request("lowBalance", &id, &[], Some("bank-1"), &["segments/lowBalance"]);
        let (status, problem) = status_and_json(handle(&f.s.reader(), req).await.unwrap());
        assert_eq!((status, problem["code"].as_str()), (400, Some("unknown_job")));
    }

    #[tokio::test]
    async fn a_failed_job_is_422_with_the_reason() {
        let f = fixture(1000);
        let job = job("bank-1", Utc::now());
        f.s.jobs.create(&job).await.unwrap();
        f.s.jobs.fail(&job.mandator_id, job.job_id, "gave up after 5 attempts").await.unwrap();
        let (status, problem) = get(&f, "highBalance", &job.job_id.to_string(), &[], "bank-1").await;
        assert_eq!(status, 422);
        assert_eq!(problem["code"], "job_failed");
        assert!(problem["detail"].as_str().unwrap().contains("gave up after 5 attempts"));
    }

    #[tokio::test]
    async fn bad_paging_parameters_name_the_parameter() {
        let f = fixture(1000);
        let job = completed(&f, "bank-1", 3).await;
        let id = job.job_id.to_string();
        for (query, field) in [
            (("perPage", "0"), "perPage"),
            (("perPage", "501"), "perPage"),
            (("perPage", "abc"), "perPage"),
            (("page", "0"), "page"),
            (("page", "-1"), "page"),
        ] {
            let (status, problem) = get(&f, "highBalance", &id, &[query], "bank-1").await;
            assert_eq!(status, 400, "{query:?}");
            assert_eq!(problem["code"], "invalid_parameter");
            assert_eq!(problem["field"], field);
        }
        let (status, _) = get(&f, "highBalance", &id, &[("perPage", "500")], "bank-1").await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn the_scope_of_the_type_is_required() {
        let f = fixture(1000);
        let job = completed(&f, "bank-1", 1).await;
        let req =
            get_result_request("highBalance", &job.job_id.to_string(), &[], Some("bank-1"), &["segments/lowBalance"]);
        let (status, problem) = status_and_json(handle(&f.s.reader(), req).await.unwrap());
        assert_eq!((status, problem["code"].as_str()), (403, Some("insufficient_scope")));
        let req = get_result_request("highBalance", &job.job_id.to_string(), &[], None, &[]);
        let (status, _) = status_and_json(handle(&f.s.reader(), req).await.unwrap());
        assert_eq!(status, 401);
    }

    #[tokio::test]
    async fn the_recorded_events_of_the_typed_routes_carry_the_type_in_the_path() {
        let f = fixture(1000);
        for event in [
            include_str!("../../../events/get-result-high-balance.json"),
            include_str!("../../../events/get-result-low-balance.json"),
            include_str!("../../../events/get-result-income-spending-summary.json"),
            include_str!("../../../events/get-result-insurance-spending.json"),
            include_str!("../../../events/get-result-financial-breakdown.json"),
        ] {
            let req = lambda_http::request::from_str(event).unwrap();
            let (status, problem) = status_and_json(handle(&f.s.reader(), req).await.unwrap());
            // The recorded job does not exist here: the type was understood, the job is unknown.
            assert_eq!((status, problem["code"].as_str()), (400, Some("unknown_job")), "{problem}");
        }
    }
}
