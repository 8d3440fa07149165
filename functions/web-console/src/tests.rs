use super::*;

fn get(path: &str) -> Request {
    http::Request::builder().uri(path).body(Body::Empty).unwrap()
}

fn text(response: &Response<Body>) -> String {
    match response.body() {
        Body::Text(t) => t.clone(),
        Body::Binary(b) => String::from_utf8(b.clone()).unwrap(),
        _ => String::new(),
    }
}

fn header<'a>(response: &'a Response<Body>, name: &str) -> &'a str {
    response.headers().get(name).map(|v| v.to_str().unwrap()).unwrap_or_default()
}

fn cognito() -> ConsoleConfig {
    let vars = |name: &str| match name {
        COGNITO_DOMAIN_VAR => Some("https://segments-dev.auth.eu-central-1.amazoncognito.com/".to_owned()),
        CLIENT_ID_VAR => Some("console-client".to_owned()),
        SCOPES_VAR => Some("openid segments/usage.read".to_owned()),
        _ => None,
    };
    ConsoleConfig::from_vars(vars).unwrap()
}

#[test]
fn every_listed_file_is_served_with_its_type_and_the_index_names_only_listed_files() {
    let config = ConsoleConfig::token();
    let index = respond(&config, &get("/console/"));
    assert_eq!(index.status(), StatusCode::OK);
    assert_eq!(header(&index, "content-type"), "text/html; charset=utf-8");
    let html = text(&index);
    for asset in ASSETS {
        let response = respond(&config, &get(&format!("/console/{}", asset.name)));
        assert_eq!(response.status(), StatusCode::OK, "{}", asset.name);
        assert_eq!(header(&response, "content-type"), asset.content_type);
        assert!(!asset.bytes.is_empty(), "{} is empty", asset.name);
    }
    // Every file the page loads (scripts, styles, icon, and the modules' imports) is listed.
    let references: Vec<&str> = html.split(['"', '\'']).filter(|s| s.starts_with("/console/")).collect();
    assert_eq!(references.len(), 3, "the icon, the stylesheet and the script: {references:?}");
    for reference in references {
        assert!(ASSETS.iter().any(|a| format!("/console/{}", a.name) == reference), "{reference} is not served");
    }
    assert!(!html.contains("\"./"), "the page names its files by absolute paths (it is served at /console too)");
    for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
        let code = std::str::from_utf8(asset.bytes).unwrap();
        for module in code.split("from \"").skip(1).map(|rest| rest.split('"').next().unwrap()) {
            let name = module.strip_prefix("./").unwrap_or_else(|| panic!("{}: {module}", asset.name));
            assert!(ASSETS.iter().any(|a| a.name == name), "{}: {name} is not served", asset.name);
        }
    }
}

#[test]
fn security_headers_forbid_foreign_code_and_framing() {
    let response = respond(&ConsoleConfig::token(), &get("/console/app.js"));
    let csp = header(&response, "content-security-policy");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self';"), "only the API's origin locally: {csp}");
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    assert_eq!(header(&response, "referrer-policy"), "no-referrer");
    let deployed = respond(&cognito(), &get("/console/app.js"));
    assert!(header(&deployed, "content-security-policy").contains(
        "connect-src 'self' https://segments-dev.auth.eu-central-1.amazoncognito.com https://*.amazonaws.com;"
    ));
}

#[test]
fn the_configuration_tells_the_page_how_to_sign_in() {
    let local = respond(&ConsoleConfig::token(), &get("/console/config.json"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text(&local)).unwrap(),
        serde_json::json!({"signIn": "token"})
    );
    let deployed: serde_json::Value =
        serde_json::from_str(&text(&respond(&cognito(), &get("/console/config.json")))).unwrap();
    assert_eq!(
        deployed,
        serde_json::json!({
            "signIn": "cognito",
            "authorizeUrl": "https://segments-dev.auth.eu-central-1.amazoncognito.com/oauth2/authorize",
            "tokenUrl": "https://segments-dev.auth.eu-central-1.amazoncognito.com/oauth2/token",
            "logoutUrl": "https://segments-dev.auth.eu-central-1.amazoncognito.com/logout",
            "clientId": "console-client",
            "scopes": ["openid", "segments/usage.read"],
        })
    );
}

#[test]
fn half_a_cognito_configuration_is_refused() {
    let only_domain =
        |name: &str| (name == COGNITO_DOMAIN_VAR).then(|| "https://x.auth.eu-central-1.amazoncognito.com".to_owned());
    assert!(ConsoleConfig::from_vars(only_domain).is_err());
    let plain_http = |name: &str| match name {
        COGNITO_DOMAIN_VAR => Some("http://x.example".to_owned()),
        CLIENT_ID_VAR => Some("c".to_owned()),
        _ => None,
    };
    assert!(ConsoleConfig::from_vars(plain_http).is_err());
    assert_eq!(ConsoleConfig::from_vars(|_| Some(" ".to_owned())).unwrap(), ConsoleConfig::token());
}

#[test]
fn the_page_is_served_with_and_without_the_slash_and_other_paths_and_methods_are_refused() {
    let config = ConsoleConfig::token();
    assert_eq!(text(&respond(&config, &get("/console"))), text(&respond(&config, &get("/console/"))));
    assert_eq!(respond(&config, &get("/console/secret.txt")).status(), StatusCode::NOT_FOUND);
    assert_eq!(respond(&config, &get("/console/../Cargo.toml")).status(), StatusCode::NOT_FOUND);
    assert_eq!(respond(&config, &get("/consoles")).status(), StatusCode::NOT_FOUND);
    let post = http::Request::builder().method("POST").uri("/console/").body(Body::Empty).unwrap();
    assert_eq!(respond(&config, &post).status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn a_current_copy_is_answered_304_and_head_has_no_body() {
    let config = ConsoleConfig::token();
    let first = respond(&config, &get("/console/console.css"));
    let etag = header(&first, "etag").to_owned();
    assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
    let again =
        http::Request::builder().uri("/console/console.css").header("if-none-match", &etag).body(Body::Empty).unwrap();
    let response = respond(&config, &again);
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert!(matches!(response.body(), Body::Empty));
    let head = http::Request::builder().method("HEAD").uri("/console/console.css").body(Body::Empty).unwrap();
    let response = respond(&config, &head);
    assert_eq!(response.status(), StatusCode::OK);
    assert!(matches!(response.body(), Body::Empty));
}

#[test]
fn the_recorded_api_gateway_event_is_answered_with_the_file() {
    let event = lambda_http::request::from_str(include_str!("../../../events/console-file.json")).unwrap();
    let response = respond(&ConsoleConfig::token(), &event);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), "text/javascript; charset=utf-8");
    assert!(text(&response).contains("import"));
}
