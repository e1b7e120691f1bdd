use super::*;

#[test]
fn rack_toml_keeps_other_keys() {
    let dir = crate::testing::data_dir_with(
        "domain = \"example.com\"\n[aws]\nwait_for_rollout = false\n",
    );
    let section = AwsSection {
        region: "us-east-1".into(),
        stack: "rack-x".into(),
        subnets: vec!["subnet-1".into(), "subnet-2".into()],
        ..AwsSection::default()
    };
    write_rack_toml(dir.path(), "x", &section).unwrap();
    let text = std::fs::read_to_string(dir.path().join("rack.toml")).unwrap();
    assert!(text.contains("domain = \"example.com\""), "{text}");
    assert!(text.contains("provider = \"aws\""), "{text}");
    let back = AwsSection::from_file(dir.path()).unwrap().unwrap();
    assert_eq!(back.subnets, section.subnets);
    assert_eq!(back.wait_for_rollout, Some(false));
    // No scheduler role (a rack stack from before timers): none written,
    // and the file still reads.
    assert!(!text.contains("scheduler_role_arn"), "{text}");
    assert_eq!(back.scheduler_role_arn, None);
}
