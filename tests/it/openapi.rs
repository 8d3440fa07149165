//! The OpenAPI document (`infra/openapi.json`) is kept in step with the code.

use std::collections::BTreeSet;

use financial_segments::server::ROUTES;
use segments_core::domain::{AccountType, SegmentType};
use segments_core::http::PROBLEM_CODES;
use segments_core::usecases::account_data::body::{
    MAX_ACCOUNTS, MAX_COUNTERPART_CHARS, MAX_LABEL_CHARS, MAX_LABELS, MAX_PURPOSE_CHARS,
};
use serde_json::Value;

fn document() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/infra/openapi.json")).unwrap();
    serde_json::from_str(&text).expect("openapi.json is JSON")
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array().expect("an array").iter().map(|s| s.as_str().expect("a string").to_owned()).collect()
}

#[test]
fn it_is_openapi_3_1() {
    assert_eq!(document()["openapi"], "3.1.0");
}

#[test]
fn its_operations_are_exactly_the_served_routes() {
    let doc = document();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> = ROUTES.iter().map(|r| (r.method.to_owned(), r.path.to_owned())).collect();
    assert_eq!(documented, served);
}

#[test]
fn its_enums_are_the_code_enums() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let types: BTreeSet<String> = SegmentType::ALL.iter().map(|t| t.as_str().to_owned()).collect();
    assert_eq!(strings(&schemas["SegmentType"]["enum"]), types);
    let accounts: BTreeSet<String> = AccountType::ALL.iter().map(|t| t.as_str().to_owned()).collect();
    assert_eq!(strings(&schemas["AccountType"]["enum"]), accounts);
    let codes: BTreeSet<String> = PROBLEM_CODES.iter().map(|c| (*c).to_owned()).collect();
    assert_eq!(strings(&schemas["Problem"]["properties"]["code"]["enum"]), codes);
}

#[test]
fn its_limits_are_the_code_limits() {
    let doc = document();
    let get = &doc["paths"]["/segments/{segmentType}/{jobId}"]["get"]["parameters"];
    let per_page = get.as_array().unwrap().iter().find(|p| p["name"] == "perPage").expect("perPage");
    assert_eq!(per_page["schema"]["maximum"], segments_core::jobs::MAX_PER_PAGE);
    assert_eq!(per_page["schema"]["default"], get_result::DEFAULT_PER_PAGE);
    let groups = &doc["components"]["schemas"]["FinancialBreakdownRequest"]["properties"]["labelGroups"];
    assert_eq!(groups["maxItems"], segments_core::rules::params::MAX_LABEL_GROUPS);

    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["UserData"]["properties"]["accounts"]["maxItems"], MAX_ACCOUNTS);
    assert_eq!(schemas["UserDataPatch"]["properties"]["accounts"]["maxItems"], MAX_ACCOUNTS);
    assert_eq!(schemas["UserDataPatch"]["properties"]["deleteAccounts"]["maxItems"], MAX_ACCOUNTS);
    let transaction = &schemas["DataTransaction"]["properties"];
    assert_eq!(transaction["counterpartName"]["maxLength"], MAX_COUNTERPART_CHARS);
    assert_eq!(transaction["purpose"]["maxLength"], MAX_PURPOSE_CHARS);
    assert_eq!(transaction["labels"]["maxItems"], MAX_LABELS);
    assert_eq!(transaction["labels"]["items"]["maxLength"], MAX_LABEL_CHARS);
}
