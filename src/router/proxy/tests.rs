use super::*;

#[test]
fn hop_by_hop_and_forwarded_headers() {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONNECTION,
        HeaderValue::from_static("keep-alive, X-Secret"),
    );
    h.insert("x-secret", HeaderValue::from_static("1"));
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
    h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
    h.insert("x-app", HeaderValue::from_static("kept"));
    let host = HeaderValue::from_static("a.localhost:8080");
    let out = forward_headers(
        h.clone(),
        host.clone(),
        ("10.0.0.9".parse().unwrap(), "http"),
        false,
        None,
    );
    assert!(
        out.get("x-secret").is_none()
            && out.get(header::TE).is_none()
            && out.get(header::CONNECTION).is_none()
    );
    assert_eq!(out["x-forwarded-for"], "10.0.0.9");
    assert_eq!(out["x-forwarded-proto"], "http");
    assert_eq!(out["x-forwarded-host"], "a.localhost:8080");
    assert!(out.get("forwarded").is_none());
    assert_eq!(out["x-app"], "kept");
    assert_eq!(out[header::HOST], "a.localhost:8080");

    let out = forward_headers(
        h.clone(),
        host.clone(),
        ("::ffff:10.0.0.9".parse().unwrap(), "http"),
        true,
        None,
    );
    assert_eq!(out["x-forwarded-for"], "6.6.6.6, 10.0.0.9");
    assert_eq!(out["x-forwarded-proto"], "https");
    assert_eq!(out["forwarded"], "for=6.6.6.6");

    // Over TLS the router says so, whatever an untrusted client claimed.
    h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    let out = forward_headers(h, host, ("10.0.0.9".parse().unwrap(), "https"), false, None);
    assert_eq!(out["x-forwarded-proto"], "https");
}

#[test]
fn upgrade_detection() {
    let mut h = HeaderMap::new();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    assert!(upgrade_protocol(&h).is_none());
    h.insert(
        header::CONNECTION,
        HeaderValue::from_static("keep-alive, Upgrade"),
    );
    assert_eq!(upgrade_protocol(&h).unwrap(), "websocket");
    let out = forward_headers(
        h,
        HeaderValue::from_static("a"),
        ("127.0.0.1".parse().unwrap(), "http"),
        false,
        Some(&HeaderValue::from_static("websocket")),
    );
    assert_eq!(out[header::CONNECTION], "upgrade");
    assert_eq!(out[header::UPGRADE], "websocket");
}

#[test]
fn host_normalization() {
    for (raw, want) in [
        ("App.LocalHost:8080", "app.localhost"),
        ("a.example.com.", "a.example.com"),
        ("[::1]:80", "[::1]"),
        ("x", "x"),
        ("u@h:1", "h"),
    ] {
        assert_eq!(normalize_host(raw), want, "{raw}");
    }
}

#[test]
fn redirects_keep_path_and_query_and_name_a_non_default_port() {
    let uri: Uri = "/a/b?c=d".parse().unwrap();
    let r = redirect("app.example.com", Some(8443), &uri);
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        r.headers()[header::LOCATION],
        "https://app.example.com:8443/a/b?c=d"
    );
    let r = redirect("app.example.com", Some(443), &uri);
    assert_eq!(
        r.headers()[header::LOCATION],
        "https://app.example.com/a/b?c=d"
    );
    let r = redirect("app.example.com", None, &Uri::from_static("/"));
    assert_eq!(r.headers()[header::LOCATION], "https://app.example.com/");
}
