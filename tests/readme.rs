//! The README's settings table is generated from the settings table in code; this keeps the
//! two equal. Run with RKTUP_BLESS=1 to rewrite the README's copy.

#[test]
fn readme_settings_table_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (begin, end) = ("<!-- settings:begin -->\n", "<!-- settings:end -->");
    let start = readme
        .find(begin)
        .expect("README has a settings:begin marker")
        + begin.len();
    let stop = readme.find(end).expect("README has a settings:end marker");
    let table = rktup_config::spec::markdown_table();
    if std::env::var_os("RKTUP_BLESS").is_some() {
        let updated = format!("{}{}{}", &readme[..start], table, &readme[stop..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(
        &readme[start..stop],
        table,
        "README's settings table is stale: run RKTUP_BLESS=1 cargo test --test readme"
    );
}

#[test]
fn readme_names_the_test_command_that_ci_runs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    assert!(
        readme.contains("./test.sh"),
        "README shows the test command"
    );
    assert!(
        ci.contains("./test.sh"),
        ".ci/run calls the README's test command"
    );
}
