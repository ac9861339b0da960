//! The web console over a real socket (fake runtime, no Docker): its page
//! and assets are served without credentials and with their security
//! headers, and the API around them answers exactly as before.

use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE};

mod common;

/// The headers every console answer carries.
fn assert_hardened(resp: &reqwest::Response, what: &str) {
    let h = resp.headers();
    let csp = h
        .get(CONTENT_SECURITY_POLICY)
        .unwrap_or_else(|| panic!("{what}: no CSP"))
        .to_str()
        .unwrap();
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-eval"), "{what}: {csp}");
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{what}: {directive} in {csp}");
    }
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
}

#[tokio::test]
async fn the_console_is_served_hardened_beside_an_unchanged_api() {
    let api = common::Api::start(common::runtime()).await;
    // No credentials: the page holds no data.
    let anonymous = reqwest::Client::new();

    let page = anonymous
        .get(format!("{}/", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_hardened(&page, "/");
    assert!(page.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script src="/console/app.js" defer></script>"#));
    assert!(html.contains(r#"name="viewport""#));

    for (path, kind) in [
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let resp = anonymous
            .get(format!("{}{path}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_hardened(&resp, path);
        assert!(
            resp.headers()[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
    }

    // Unknown paths under the API are still its JSON 404 (after
    // authentication: without a token, its 401).
    let (status, body) = api.call(reqwest::Method::GET, "/api/v1/nope", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "not_found", "{body}");
    let resp = anonymous
        .get(format!("{}/api/v1/nope", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // A console asset that does not exist is not served either.
    let resp = anonymous
        .get(format!("{}/console/nope.js", api.base))
        .send()
        .await
        .unwrap();
    assert_ne!(resp.status(), 200);

    // The API, probes and the page's own calls work as before.
    let (status, list) = api
        .call(reqwest::Method::GET, "/api/v1/sessions?all=true", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list, serde_json::json!([]));
    let health = anonymous
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");
    let resp = anonymous
        .get(format!("{}/api/v1/sessions", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "the API still wants a token");
}
