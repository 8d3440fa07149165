//! The OpenAPI document (`infra/openapi.json`) is kept in step with the code.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, TimeZone, Utc};
use financial_segments::server::ROUTES;
use segments_core::domain::refresh::{
    ChangeKind, LAST_SCHEDULE_DAY, RefreshRecord, RefreshState, RefreshTrigger, WEEKDAYS,
};
use segments_core::domain::segment::{Comparison, Figure, Rule, SegmentId};
use segments_core::domain::{AccountType, JobId, MandatorId, SegmentType};
use segments_core::http::PROBLEM_CODES;
use segments_core::usecases::account_data::body::{
    MAX_ACCOUNTS, MAX_COUNTERPART_CHARS, MAX_LABEL_CHARS, MAX_LABELS, MAX_PURPOSE_CHARS,
};
use segments_core::usecases::segments::refresh::{DEFAULT_FEED_LIMIT, MAX_FEED_LIMIT, RefreshView};
use serde_json::Value;

use crate::support::template::sam_template;

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

/// Every operation of the document as (METHOD, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            out.push((method.to_uppercase(), path.clone(), operation));
        }
    }
    out
}

/// The served routes as API Gateway deploys them: a route of `/segments/{segmentType}…` once per
/// segment type, each with its own body, result and scope (the catch-all route behind them only
/// answers 400 `unknown_segment_type`, which the document describes in words).
fn served_operations() -> BTreeSet<(String, String)> {
    let mut served = BTreeSet::new();
    for route in ROUTES {
        if route.path.contains("{segmentType}") {
            for t in SegmentType::ALL {
                served.insert((route.method.to_owned(), route.path.replace("{segmentType}", t.as_str())));
            }
        } else {
            served.insert((route.method.to_owned(), route.path.to_owned()));
        }
    }
    served
}

#[test]
fn its_operations_are_exactly_the_served_routes() {
    let doc = document();
    let documented: BTreeSet<(String, String)> = operations(&doc).into_iter().map(|(m, p, _)| (m, p)).collect();
    assert_eq!(documented, served_operations());
}

/// The scopes each deployed route of the SAM template requires, by (METHOD, path).
fn template_scopes() -> BTreeMap<(String, String), Vec<String>> {
    let template = sam_template();
    let mut scopes = BTreeMap::new();
    for resource in template["Resources"].as_object().unwrap().values() {
        for event in resource["Properties"]["Events"].as_object().into_iter().flat_map(|e| e.values()) {
            if event["Type"] != "HttpApi" {
                continue;
            }
            let route = &event["Properties"];
            let (Some(method), Some(path)) = (route["Method"].as_str(), route["Path"].as_str()) else { continue };
            let required = route["Auth"]["AuthorizationScopes"].as_array().map(|s| strings(&Value::Array(s.clone())));
            scopes.insert((method.to_uppercase(), path.to_owned()), required.into_iter().flatten().collect());
        }
    }
    scopes
}

#[test]
fn each_operation_requires_the_scope_of_its_served_route() {
    let doc = document();
    let scheme = &doc["components"]["securitySchemes"]["oauth2"];
    assert_eq!(scheme["type"], "oauth2");
    let flow = &scheme["flows"]["clientCredentials"];
    assert!(
        flow["tokenUrl"].as_str().is_some_and(|u| u.starts_with("https://") && u.ends_with("/oauth2/token")),
        "the token URL is the Cognito domain's /oauth2/token: {}",
        flow["tokenUrl"]
    );
    let declared: BTreeSet<String> = flow["scopes"].as_object().unwrap().keys().cloned().collect();
    let minted: BTreeSet<String> = financial_segments::token::all_scopes().into_iter().collect();
    assert_eq!(declared, minted, "the scheme lists every scope there is");

    let deployed = template_scopes();
    for (method, path, operation) in operations(&doc) {
        let security = operation["security"].as_array().unwrap_or_else(|| panic!("{method} {path} has no security"));
        assert_eq!(security.len(), 1, "{method} {path}: one requirement");
        let scopes = strings(&security[0]["oauth2"]);
        let route = (method.clone(), path.clone());
        let expected = deployed.get(&route).unwrap_or_else(|| panic!("{method} {path} is no route of the template"));
        assert_eq!(scopes, expected.iter().cloned().collect(), "{method} {path}: the scope API Gateway requires");
        // The function checks the same scope again; the financial segments' is the type's own.
        if let Some(t) = SegmentType::ALL.iter().find(|t| path.starts_with(&format!("/segments/{}", t.as_str()))) {
            assert_eq!(scopes, BTreeSet::from([t.scope()]), "{method} {path}");
        }
    }
}

#[test]
fn every_operation_documents_the_gateway_answers() {
    let doc = document();
    let responses = &doc["components"]["responses"];
    for (method, path, operation) in operations(&doc) {
        for status in ["401", "403", "429", "500", "502", "503", "504"] {
            let response = &operation["responses"][status];
            let response = match response["$ref"].as_str() {
                Some(r) => &responses[r.trim_start_matches("#/components/responses/")],
                None => response,
            };
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/GatewayError",
                "{method} {path} {status}: API Gateway's own body"
            );
        }
    }
    let gateway = &doc["components"]["schemas"]["GatewayError"];
    assert_eq!(strings(&gateway["required"]), BTreeSet::from(["message".to_owned()]));
}

#[test]
fn creations_link_to_what_reads_them() {
    let doc = document();
    let ids: BTreeSet<String> =
        operations(&doc).iter().filter_map(|(_, _, op)| op["operationId"].as_str().map(str::to_owned)).collect();
    let links = |path: &str, method: &str, status: &str| -> BTreeSet<String> {
        let links = doc["paths"][path][method]["responses"][status]["links"].as_object();
        let targets: BTreeSet<String> =
            links.into_iter().flatten().map(|(_, l)| l["operationId"].as_str().unwrap().to_owned()).collect();
        for target in &targets {
            assert!(ids.contains(target), "{method} {path} links to {target}, which is no operation");
        }
        targets
    };
    for t in SegmentType::ALL {
        let name = t.as_str();
        let upper = format!("{}{}", name[..1].to_uppercase(), &name[1..]);
        let created = links(&format!("/segments/{name}"), "post", "202");
        for target in [format!("get{upper}Result"), format!("export{upper}Result"), format!("list{upper}Jobs")] {
            assert!(created.contains(&target), "creating a {name} job links to {target}");
        }
    }
    for (level, base) in [
        ("Org", "/v1/organizations/{organizationId}"),
        ("Ledger", "/v1/organizations/{organizationId}/ledgers/{ledgerId}"),
    ] {
        let created = links(&format!("{base}/segments"), "post", "201");
        for op in ["get{}Segment", "update{}Segment", "delete{}Segment", "list{}SegmentAccounts", "list{}Segments"] {
            let target = op.replace("{}", level);
            assert!(created.contains(&target), "creating a segment links to {target}");
        }
        let read = links(&format!("{base}/segments/{{segmentId}}"), "get", "200");
        let updated = links(&format!("{base}/segments/{{segmentId}}"), "patch", "200");
        for target in
            [format!("update{level}Segment"), format!("delete{level}Segment"), format!("list{level}SegmentRefreshes")]
        {
            assert!(read.contains(&target) && updated.contains(&target), "{level}: read and update link to {target}");
        }
        // A started refresh leads to itself, a segment's refreshes to one of them, and a refresh
        // to its change feed: the stateful phase walks the refresh lifecycle this way.
        for status in ["200", "202"] {
            let refreshed = links(&format!("{base}/segments/{{segmentId}}/refresh"), "post", status);
            for target in [format!("get{level}SegmentRefresh"), format!("list{level}SegmentRefreshes")] {
                assert!(refreshed.contains(&target), "{level}: refreshing ({status}) links to {target}");
            }
        }
        let listed = links(&format!("{base}/segments/{{segmentId}}/refreshes"), "get", "200");
        assert!(listed.contains(&format!("get{level}SegmentRefresh")), "{level}: listing refreshes links to one");
        let refresh = links(&format!("{base}/segments/{{segmentId}}/refreshes/{{refreshId}}"), "get", "200");
        assert!(refresh.contains(&format!("list{level}SegmentRefreshChanges")), "{level}: a refresh links to its feed");
    }
    assert!(links("/data/imports", "post", "201").contains("getImport"));
}

#[test]
fn each_type_has_its_own_body_and_result_page() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    for t in SegmentType::ALL {
        let name = t.as_str();
        let upper = format!("{}{}", name[..1].to_uppercase(), &name[1..]);
        let create = &doc["paths"][format!("/segments/{name}")]["post"];
        assert_eq!(
            create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            format!("#/components/schemas/{upper}Request")
        );
        let page = &doc["paths"][format!("/segments/{name}/{{jobId}}")]["get"]["responses"]["200"];
        let page_ref = format!("#/components/schemas/{upper}ResultPage");
        assert_eq!(page["content"]["application/json"]["schema"]["$ref"], page_ref);
        assert_eq!(schemas[format!("{upper}ResultPage")]["properties"]["segmentType"]["const"], name);
    }
    // A replay under an Idempotency-Key answers the job's current status.
    let accepted = strings(&schemas["JobAccepted"]["properties"]["status"]["enum"]);
    assert_eq!(accepted, ["COMPLETED", "FAILED", "QUEUED", "RUNNING"].map(String::from).into());
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
    for t in SegmentType::ALL {
        let get = &doc["paths"][format!("/segments/{}/{{jobId}}", t.as_str())]["get"]["parameters"];
        let per_page = get.as_array().unwrap().iter().find(|p| p["name"] == "perPage").expect("perPage");
        assert_eq!(per_page["schema"]["maximum"], segments_core::jobs::MAX_PER_PAGE);
        assert_eq!(per_page["schema"]["default"], get_result::DEFAULT_PER_PAGE);
        let page = get.as_array().unwrap().iter().find(|p| p["name"] == "page").expect("page");
        assert_eq!(page["schema"]["maximum"], u32::MAX, "page is read as a 32-bit number");
    }
    assert_eq!(doc["components"]["parameters"]["Page"]["schema"]["maximum"], u32::MAX);
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

/// The schema a `$ref` names (or the schema itself when it is no reference).
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("a local reference");
            resolve(doc, doc.pointer(pointer).unwrap_or_else(|| panic!("{r} exists")))
        }
        None => schema,
    }
}

/// The non-null alternative of a `oneOf [X, null]` (or the schema itself).
fn not_null<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["oneOf"].as_array() {
        Some(alternatives) => {
            let mut found = alternatives.iter().filter(|a| a["type"] != "null");
            let only = found.next().expect("a non-null alternative");
            assert!(found.next().is_none(), "one non-null alternative: {schema}");
            resolve(doc, only)
        }
        None => resolve(doc, schema),
    }
}

fn every_refresh_state() -> Vec<RefreshState> {
    // The match makes a new state a compile error here until the document names it.
    let all = [
        RefreshState::Pending,
        RefreshState::Diffing,
        RefreshState::Applying,
        RefreshState::Applied,
        RefreshState::Failed,
    ];
    for state in all {
        match state {
            RefreshState::Pending
            | RefreshState::Diffing
            | RefreshState::Applying
            | RefreshState::Applied
            | RefreshState::Failed => {}
        }
    }
    all.to_vec()
}

fn wire_names<T: serde::Serialize>(values: impl IntoIterator<Item = T>) -> BTreeSet<String> {
    values.into_iter().map(|v| serde_json::to_value(v).unwrap().as_str().expect("a string enum").to_owned()).collect()
}

#[test]
fn its_refresh_enums_are_the_code_enums() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let refresh = &schemas["Refresh"]["properties"];
    assert_eq!(strings(&refresh["status"]["enum"]), wire_names(every_refresh_state()));
    let triggers = [RefreshTrigger::Manual, RefreshTrigger::Schedule];
    for trigger in triggers {
        match trigger {
            RefreshTrigger::Manual | RefreshTrigger::Schedule => {}
        }
    }
    assert_eq!(strings(&refresh["trigger"]["enum"]), wire_names(triggers));
    assert_eq!(strings(&doc["components"]["parameters"]["ChangeKind"]["schema"]["enum"]), wire_names(ChangeKind::ALL));
    assert_eq!(strings(&schemas["Comparison"]["enum"]), wire_names(Comparison::ALL));
    assert_eq!(wire_names(Figure::ALL).len(), Figure::ALL.len());

    // Each type's rule: its parameters are its job body, and its condition names its figures.
    let rules = schemas["SegmentRule"]["oneOf"].as_array().expect("one rule schema per type");
    assert_eq!(rules.len(), SegmentType::ALL.len(), "every type may be a rule");
    for t in SegmentType::ALL {
        let rule = rules
            .iter()
            .find(|r| r["properties"]["segmentType"]["const"] == t.as_str())
            .unwrap_or_else(|| panic!("a rule schema for {}", t.as_str()));
        let condition = not_null(&doc, &rule["properties"]["condition"]);
        // A condition is one object, or one per kind of figure (counts take whole thresholds).
        let alternatives: Vec<&Value> = match condition["oneOf"].as_array() {
            Some(kinds) => kinds.iter().map(|k| resolve(&doc, k)).collect(),
            None => vec![condition],
        };
        let documented: BTreeSet<String> =
            alternatives.iter().flat_map(|c| strings(&c["properties"]["figure"]["enum"])).collect();
        let figures: BTreeSet<String> = Figure::of(*t).iter().map(|f| f.as_str().to_owned()).collect();
        assert_eq!(documented, figures, "{}", t.as_str());
        let breakdown = *t == SegmentType::FinancialBreakdown;
        // financialBreakdown lists no accounts: without a condition its rule would select nobody.
        assert_eq!(strings(&rule["required"]).contains("condition"), breakdown, "{}", t.as_str());
        // The other types take accountType and labelGroup only as null (absent).
        let only_null = |schema: &Value| schema["type"] == "null";
        assert_eq!(!only_null(&rule["properties"]["accountType"]), breakdown, "{}", t.as_str());
        for c in &alternatives {
            assert_eq!(!only_null(&c["properties"]["labelGroup"]), breakdown, "{}", t.as_str());
            let whole = c["properties"]["threshold"]["multipleOf"] == 1;
            let counts = strings(&c["properties"]["figure"]["enum"])
                .iter()
                .all(|name| Figure::ALL.iter().any(|f| f.as_str() == name && f.is_count()));
            assert_eq!(whole, counts, "{}: a count's threshold is a whole number", t.as_str());
        }
    }

    // The schedule: weekdays by name, days of the month up to the last every month has.
    let schedules = schemas["Schedule"]["oneOf"].as_array().unwrap();
    let every = |name: &str| schedules.iter().find(|s| s["properties"]["every"]["const"] == name).unwrap();
    let weekdays: BTreeSet<String> = every("week")["properties"]["on"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect();
    assert_eq!(weekdays, WEEKDAYS.iter().map(|(name, _)| (*name).to_owned()).collect());
    assert_eq!(every("month")["properties"]["on"]["maximum"], LAST_SCHEDULE_DAY);
    assert_eq!(schedules.len(), 3, "day, week, month");
}

#[test]
fn a_refresh_shows_exactly_the_documented_fields() {
    let doc = document();
    let schema = &doc["components"]["schemas"]["Refresh"];
    let documented: BTreeSet<String> = schema["properties"].as_object().unwrap().keys().cloned().collect();
    let required = strings(&schema["required"]);
    let now = Utc.with_ymd_and_hms(2026, 11, 30, 6, 0, 0).unwrap();
    let mandator = MandatorId::parse("bank-1").unwrap();
    let started = RefreshRecord::start(
        mandator,
        SegmentId::new(),
        JobId::new(),
        RefreshTrigger::Schedule,
        Rule { segment_type: SegmentType::HighBalance, parameters: "{}".into(), condition: None, account_type: None },
        now,
        Duration::minutes(1),
    );
    let mut failed = started.next();
    failed.state = RefreshState::Failed;
    failed.finished_at = Some(now);
    failed.error = Some("the job failed".into());
    for record in [&started, &failed] {
        let shown = serde_json::to_value(RefreshView::from(&record.summary())).unwrap();
        let keys: BTreeSet<String> = shown.as_object().unwrap().keys().cloned().collect();
        assert!(keys.is_subset(&documented), "{shown} has fields the document does not name");
        assert!(required.is_subset(&keys), "{shown} lacks a required field");
    }
    assert_eq!(schema["additionalProperties"], false, "a refresh is a closed object");
    assert!(!required.contains("error"), "error is shown only when a refresh failed");
}

#[test]
fn the_feeds_page_within_the_code_limits() {
    let doc = document();
    let parameters = &doc["components"]["parameters"];
    let schemas = &doc["components"]["schemas"];
    assert_eq!(parameters["ChangeLimit"]["schema"]["maximum"], MAX_FEED_LIMIT);
    assert_eq!(parameters["ChangeLimit"]["schema"]["default"], DEFAULT_FEED_LIMIT);
    assert_eq!(schemas["ChangePage"]["properties"]["limit"]["maximum"], MAX_FEED_LIMIT);
    assert_eq!(schemas["RefreshPage"]["properties"]["limit"]["maximum"], segments_api::MAX_REFRESH_LIMIT);
    for (level, base) in [
        ("Org", "/v1/organizations/{organizationId}"),
        ("Ledger", "/v1/organizations/{organizationId}/ledgers/{ledgerId}"),
    ] {
        let changes = &doc["paths"][format!("{base}/segments/{{segmentId}}/refreshes/{{refreshId}}/changes")]["get"];
        let names: Vec<String> = changes["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| resolve(&doc, p)["name"].as_str().unwrap().to_owned())
            .collect();
        assert!(names.iter().any(|n| n == "kind") && names.iter().any(|n| n == "cursor"), "{level}: {names:?}");
        assert!(changes["responses"]["409"].is_object(), "{level}: the feed of an unrecorded refresh is a 409");
        let list = &doc["paths"][format!("{base}/segments/{{segmentId}}/refreshes")]["get"];
        let limit = list["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| resolve(&doc, p))
            .find(|p| p["name"] == "limit")
            .expect("a limit");
        assert_eq!(limit["schema"]["maximum"], segments_api::MAX_REFRESH_LIMIT, "{level}");
        assert_eq!(limit["schema"]["default"], segments_api::DEFAULT_REFRESH_LIMIT, "{level}");
        assert_eq!(
            list["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/RefreshPage"
        );
    }
}
