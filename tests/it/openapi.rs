//! The OpenAPI document at `/openapi.json` (OpenAPI 3.1) describes every route the node serves,
//! and the Swagger UI page at `/docs` loads nothing from anywhere but the node.
//!
//! Routes registered with `routes!` are documented by construction: the macro takes the method
//! and path from the handler's `#[utoipa::path]` (a handler without one does not compile). Every
//! other registration is found in the source, in the files that name axum:
//! `.route(PATH, METHOD(..))` must be in the document with its path and methods, and the calls
//! that add routes wholesale (`.route_service`, `.nest`, `.nest_service`, `.merge`) must be
//! listed in [`WHOLESALE`] with the reason they add no undocumented route.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

use crate::support::*;

/// Route-adding calls that take no path and method, allowed where they add only documented
/// routes: (file, call, argument, why).
const WHOLESALE: &[(&str, &str, &str, &str)] = &[(
    "src/app.rs",
    "merge",
    "crate::ws::routes()",
    "an OpenApiRouter (the only kind it merges), whose routes come from `routes!`",
)];

/// The methods an OpenAPI path item may hold, as axum's method routers are named.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// A (method, path) pair, the method in lower case and the path as axum and OpenAPI write it.
type Route = (String, String);

async fn document(node: &TestNode) -> Value {
    fetch_document(&node.http("/openapi.json")).await
}

/// The metrics listener's document.
async fn operator_document(node: &TestNode) -> Value {
    fetch_document(&node.metrics("/openapi.json")).await
}

async fn fetch_document(url: &str) -> Value {
    let response = http_get(url).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert_eq!(content_type, "application/json");
    response.json().await.unwrap()
}

/// Every (method, path) of the document.
fn operations(document: &Value) -> BTreeSet<Route> {
    let paths = document["paths"].as_object().expect("paths");
    let mut operations = BTreeSet::new();
    for (path, item) in paths {
        for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            operations.insert((method.to_string(), path.clone()));
        }
    }
    operations
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_every_operation_in_it_is_served() {
    let node = spawn_node(test_config());
    let public = document(&node).await;
    let operator = operator_document(&node).await;
    for document in [&public, &operator] {
        let version = document["openapi"].as_str().unwrap();
        assert!(version.starts_with("3.1."), "OpenAPI {version}");
    }
    assert!(operations(&public).len() >= 20);
    assert_eq!(operations(&operator).len(), 4);
    let probes = operations(&public)
        .into_iter()
        .map(|op| (node.addr, op))
        .chain(
            operations(&operator)
                .into_iter()
                .map(|op| (node.metrics_addr.unwrap(), op)),
        );
    let client = http_client();
    for (addr, (method, path)) in probes {
        let path = path.replace('{', "probe-").replace('}', "");
        let url = format!("http://{addr}{path}");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let response = client.request(method.clone(), url).send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let unrouted = json!({"detail": "no such route", "code": "not_found"});
        assert!(
            status != 405 && body != unrouted,
            "{method} {path} is documented but not served: {status} {body}"
        );
    }
}

#[tokio::test]
async fn every_route_registered_without_routes_macro_is_in_the_document() {
    let node = spawn_node(test_config());
    let mut documented = operations(&document(&node).await);
    documented.extend(operations(&operator_document(&node).await));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    for file in rust_files(&root.join("src")) {
        let name = file
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let code = code(&std::fs::read_to_string(&file).unwrap());
        for (call, args) in registrations(&code) {
            if call != "route" {
                let allowed = WHOLESALE
                    .iter()
                    .any(|(f, c, a, _)| *f == name && *c == call && squeeze(&args) == *a);
                if !allowed {
                    problems.push(format!(
                        "{name}: `.{call}({args})` may add undocumented routes: use `routes!`"
                    ));
                }
                continue;
            }
            match route(&args) {
                Some(routes) => {
                    for (method, path) in routes {
                        if !documented.contains(&(method.clone(), path.clone())) {
                            let method = method.to_uppercase();
                            problems.push(format!(
                                "{name}: {method} {path} is served but not in the document"
                            ));
                        }
                    }
                }
                None => problems.push(format!(
                    "{name}: `.route({args})`: cannot tell its path and methods"
                )),
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_source_scan_finds_plain_registrations() {
    let code = code(concat!(
        "use axum::Router;\n",
        "fn routes() -> Router {\n",
        "    // .route(\"/commented\", get(x))\n",
        "    let s = \".route(\\\"/quoted\\\", get(x))\";\n",
        "    let c = '\"';\n",
        "    let r#type = r#\".route(\"/raw\", get(x))\"#;\n",
        "    Router::new()\n",
        "        .route(\"/a/{id}\", get(a::show).post(a::update))\n",
        "        .route(\"/b\", axum::routing::put(b))\n",
        "        .route_service(\"/static\", ServeDir::new(\"s\"))\n",
        "        .merge(other())\n",
        "}\n",
        "#[cfg(test)]\nmod tests {\n    fn f() { Router::new().route(\"/test\", get(t)); }\n}\n",
    ));
    let found = registrations(&code);
    let calls: Vec<&str> = found.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(calls, ["route", "route", "route_service", "merge"]);
    let routes: Vec<Route> = found[..2]
        .iter()
        .flat_map(|(_, a)| route(a).unwrap())
        .collect();
    let want = [("get", "/a/{id}"), ("post", "/a/{id}"), ("put", "/b")];
    let want: Vec<Route> = want
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(routes, want);
    assert_eq!(route("PATH, get(x)"), None, "a path that is not a literal");
    assert_eq!(
        route("\"/x\", any(x)"),
        None,
        "a method router that is not one method"
    );
}

#[tokio::test]
async fn the_docs_page_and_its_assets_are_served_by_the_node() {
    let node = spawn_node(test_config());
    let response = http_get(node.http("/docs")).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap();
    assert!(
        !page.contains("://"),
        "the page names another origin:\n{page}"
    );
    let assets = attribute_values(&page, &["src", "href"]);
    assert!(assets.len() >= 5, "{assets:?}");
    for asset in &assets {
        // The page is at `/docs`: a relative URL resolves against `/`.
        let path = if asset.starts_with('/') {
            asset.clone()
        } else {
            format!("/{asset}")
        };
        let response = http_get(node.http(&path)).await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        assert!(!response.bytes().await.unwrap().is_empty(), "{asset}");
    }
    let initializer = http_get(node.http("/docs/swagger-initializer.js"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        initializer.contains(r#""url": "openapi.json""#),
        "{initializer}"
    );
    assert!(
        initializer.contains(r#""validatorUrl": "none""#),
        "no validator badge from elsewhere: {initializer}"
    );
    let missing = http_get(node.http("/docs/nothing.js")).await.unwrap();
    assert_eq!(missing.status(), 404);
}

/// The values of the given attributes (`name="value"`) in `html`.
fn attribute_values(html: &str, names: &[&str]) -> Vec<String> {
    let mut values = Vec::new();
    for name in names {
        let marker = format!(" {name}=\"");
        for (at, _) in html.match_indices(&marker) {
            let rest = &html[at + marker.len()..];
            values.push(rest[..rest.find('"').unwrap()].to_owned());
        }
    }
    values
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// `source` without comments, raw string literals (kept as `""`), character literals (kept as
/// `'_'`) and a trailing `#[cfg(test)] mod .. {` (routes registered in unit tests are not the
/// node's). Other string literals are kept.
fn code(source: &str) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let tests = lines.windows(2).position(|pair| {
        let module = pair[1].trim_start_matches("pub ");
        pair[0].trim() == "#[cfg(test)]" && module.starts_with("mod ") && module.ends_with('{')
    });
    let source = lines[..tests.unwrap_or(lines.len())].join("\n");
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let word_start = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        match chars[i] {
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            'r' if word_start && raw_string_hashes(&chars[i + 1..]).is_some() => {
                let hashes = raw_string_hashes(&chars[i + 1..]).unwrap_or(0);
                let close: String = std::iter::once('"')
                    .chain("#".repeat(hashes).chars())
                    .collect();
                let body = i + 2 + hashes;
                let rest: String = chars[body.min(chars.len())..].iter().collect();
                let end = rest.find(&close).map_or(chars.len(), |at| {
                    body + rest[..at].chars().count() + close.chars().count()
                });
                out.push_str("\"\"");
                i = end;
            }
            '"' => {
                let end = string_end(&chars, i);
                out.extend(&chars[i..end.min(chars.len())]);
                i = end;
            }
            '\'' if chars.get(i + 1) == Some(&'\\') => {
                let end = (i + 3..chars.len()).find(|&j| chars[j] == '\'');
                out.push_str("'_'");
                i = end.map_or(chars.len(), |j| j + 1);
            }
            '\'' if chars.get(i + 2) == Some(&'\'') => {
                out.push_str("'_'");
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// How many `#` open the raw string literal whose `r` comes just before `chars`, if one does.
fn raw_string_hashes(chars: &[char]) -> Option<usize> {
    let hashes = chars.iter().take_while(|c| **c == '#').count();
    (chars.get(hashes) == Some(&'"')).then_some(hashes)
}

/// The index just past the string literal that opens at `start`.
fn string_end(chars: &[char], start: usize) -> usize {
    let mut i = start + 1;
    while i < chars.len() && chars[i] != '"' {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// The calls that add routes to a router, outside string literals: `.route(..)`,
/// `.route_service(..)`, `.nest(..)`, `.nest_service(..)` and `.merge(..)`, in code that names
/// axum (only such code can build a router; `scripts/layers` keeps it at the edge): (call, its
/// arguments).
fn registrations(code: &str) -> Vec<(String, String)> {
    const CALLS: [&str; 5] = ["route", "route_service", "nest", "nest_service", "merge"];
    if !code.contains("axum") {
        return Vec::new();
    }
    let chars: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '"' {
            i = string_end(&chars, i);
            continue;
        }
        if chars[i] == '.' {
            let name: String = chars[i + 1..]
                .iter()
                .take_while(|c| c.is_alphanumeric() || **c == '_')
                .collect();
            let open = i + 1 + name.chars().count();
            if CALLS.contains(&name.as_str()) && chars.get(open) == Some(&'(') {
                let close = matching(&chars, open);
                found.push((name, chars[open + 1..close].iter().collect()));
            }
        }
        i += 1;
    }
    found
}

/// The index of the parenthesis that closes the one at `open`.
fn matching(chars: &[char], open: usize) -> usize {
    let mut depth = 0;
    let mut i = open;
    while i < chars.len() {
        match chars[i] {
            '"' => {
                i = string_end(chars, i);
                continue;
            }
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    chars.len()
}

/// The (method, path) pairs of `.route("PATH", METHOD(..).METHOD(..))`'s arguments; `None` when
/// the path is not a literal or the method router is not a chain of method functions.
fn route(args: &str) -> Option<Vec<Route>> {
    let args = args.trim();
    let rest = args.strip_prefix('"')?;
    let path = &rest[..rest.find('"')?];
    let router: Vec<char> = rest[path.len() + 1..]
        .trim_start()
        .strip_prefix(',')?
        .chars()
        .collect();
    let mut routes = Vec::new();
    let mut i = 0;
    loop {
        while router
            .get(i)
            .is_some_and(|c| c.is_whitespace() || ".,".contains(*c))
        {
            i += 1;
        }
        if i >= router.len() {
            break;
        }
        let name: String = router[i..]
            .iter()
            .take_while(|c| c.is_alphanumeric() || **c == '_' || **c == ':')
            .collect();
        let open = i + name.chars().count();
        let method = name.rsplit("::").next().unwrap_or_default();
        if !METHODS.contains(&method) || router.get(open) != Some(&'(') {
            return None;
        }
        routes.push((method.to_owned(), path.to_owned()));
        i = matching(&router, open) + 1;
    }
    (!routes.is_empty()).then_some(routes)
}

/// `text` without whitespace.
fn squeeze(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}
