//! The demo pages and the browser client library under `/demo`: embedded files with their
//! types, a strict Content-Security-Policy, ETags, JSON 404s for anything else, and nothing
//! when `demo = false`. The pages themselves are exercised in Chromium by scripts/browser-test.

use serde_json::Value;

use crate::support::*;

async fn get(url: &str, if_none_match: Option<&str>) -> reqwest::Response {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut request = client.get(url);
    if let Some(tag) = if_none_match {
        request = request.header("if-none-match", tag);
    }
    request.send().await.unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn pages_and_the_library_are_served_with_their_types_and_a_strict_policy() {
    let node = spawn_node(test_config());
    let root = get(&node.http("/demo"), None).await;
    assert_eq!(root.status(), 308);
    assert_eq!(header(&root, "location"), "/demo/");

    let files = [
        ("/demo/", "text/html"),
        ("/demo/index.html", "text/html"),
        ("/demo/switchboard.js", "text/javascript"),
        ("/demo/switchboard.d.ts", "text/plain"),
    ];
    for (path, mime) in files {
        let response = get(&node.http(path), None).await;
        assert_eq!(response.status(), 200, "{path}");
        assert!(
            header(&response, "content-type").starts_with(mime),
            "{path}: {}",
            header(&response, "content-type")
        );
        let csp = header(&response, "content-security-policy");
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        let etag = header(&response, "etag");
        assert!(etag.starts_with('"') && etag.len() > 10, "{path}: {etag:?}");
        let body = response.bytes().await.unwrap();
        assert!(!body.is_empty(), "{path}");

        let again = get(&node.http(path), Some(&etag)).await;
        assert_eq!(again.status(), 304, "{path}");
        assert!(again.bytes().await.unwrap().is_empty());
        let stale = get(&node.http(path), Some("\"0000\"")).await;
        assert_eq!(stale.status(), 200, "{path}");
    }

    // Only the embedded files, by plain name: everything else is a JSON 404.
    for path in [
        "/demo/missing.html",
        "/demo/..%2FCargo.toml",
        "/demo/%2e%2e%2fCargo.toml",
        "/demo/.hidden",
        "/demo/demo%2Findex.html",
        "/demo/e2e",
        "/demo/index.html%00",
    ] {
        let response = get(&node.http(path), None).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "not_found", "{path}: {body}");
        assert!(body["detail"].is_string(), "{path}: {body}");
    }
    let long = format!("/demo/{}.html", "a".repeat(5000));
    assert_eq!(get(&node.http(&long), None).await.status(), 404);
}

#[tokio::test]
async fn the_demo_can_be_turned_off() {
    let mut config = test_config();
    config.demo = false;
    let node = spawn_node(config);
    for path in ["/demo", "/demo/", "/demo/switchboard.js"] {
        let response = get(&node.http(path), None).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "not_found", "{path}");
    }
}
