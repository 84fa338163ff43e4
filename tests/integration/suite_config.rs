//! The suite's own settings agree with its tests: every test that takes the daemon alone
//! (`daemon::alone()`, for `cargo test`) is the same list that `.config/nextest.toml` runs
//! alone (for nextest, where the lock does not reach from one test process to another).

use std::collections::BTreeSet;

use crate::helpers::root;

/// `module::test` of every test function whose body takes `daemon::alone()`.
fn tests_taking_the_daemon_alone() -> BTreeSet<String> {
    let dir = root().join("tests/integration");
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(module) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_none_or(|e| e != "rs") || module == "suite_config" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut current = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("fn ") {
                current = rest.split('(').next().map(str::to_string);
            }
            if line.contains("daemon::alone()") {
                let name = current
                    .clone()
                    .expect("daemon::alone() inside a test function");
                found.insert(format!("{module}::{name}"));
            }
        }
    }
    found
}

/// `module::test` of every `test(=...)` in `.config/nextest.toml`.
fn alone_in_nextest_config() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join(".config/nextest.toml")).unwrap();
    text.split("test(=")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn nextest_runs_alone_the_tests_that_take_the_daemon_alone() {
    let in_code = tests_taking_the_daemon_alone();
    assert!(
        !in_code.is_empty(),
        "the search finds the daemon::alone() tests"
    );
    assert_eq!(alone_in_nextest_config(), in_code);
}
