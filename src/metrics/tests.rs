use super::*;

#[test]
fn prometheus_text_names_counter_families_by_their_samples() {
    let open = "# HELP rack_deploys Deploys.\n# TYPE rack_deploys counter\nrack_deploys_total{app=\"a\",outcome=\"succeeded\"} 1\n# HELP rack_builds_running Builds.\n# TYPE rack_builds_running gauge\nrack_builds_running 0\n# EOF\n";
    assert_eq!(
        to_prometheus_text(open),
        "# HELP rack_deploys_total Deploys.\n# TYPE rack_deploys_total counter\nrack_deploys_total{app=\"a\",outcome=\"succeeded\"} 1\n# HELP rack_builds_running Builds.\n# TYPE rack_builds_running gauge\nrack_builds_running 0\n"
    );
}

#[test]
fn labels_are_classes_not_user_strings() {
    assert_eq!(
        MethodLabel::of(&Method::from_bytes(b"BREW").unwrap()),
        MethodLabel::OTHER
    );
    assert_eq!(
        StatusClass::of(StatusCode::IM_A_TEAPOT),
        StatusClass::ClientError
    );
    request(
        UNKNOWN_APP,
        &Method::GET,
        StatusCode::NOT_FOUND,
        Duration::from_millis(1),
    );
    let text = get().encode();
    assert!(
        text.contains(
            "rack_router_requests_total{app=\"(unknown)\",method=\"GET\",status=\"4xx\"}"
        ),
        "{text}"
    );
}
