//! libtest's name filters: `FILTER` (a part of the name, or the whole name with `--exact`) and
//! `--skip` (each a part of the name, or a whole name with `--exact`), as `cargo test` applies
//! them to test names, here `runtime::model`.

/// The name filters of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameFilter {
    pub filter: Option<String>,
    pub exact: bool,
    pub skip: Vec<String>,
}

impl NameFilter {
    /// True when a case of this name stays in the run.
    pub fn keeps(&self, name: &str) -> bool {
        let matches = |pattern: &str| {
            if self.exact {
                name == pattern
            } else {
                name.contains(pattern)
            }
        };
        self.filter.as_deref().is_none_or(matches) && !self.skip.iter().any(|s| matches(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_skips_as_libtest_does() {
        let f = |filter: Option<&str>, exact: bool, skip: &[&str]| NameFilter {
            filter: filter.map(str::to_string),
            exact,
            skip: skip.iter().map(|s| s.to_string()).collect(),
        };
        assert!(f(None, false, &[]).keeps("docker::HAL"));
        assert!(f(Some("HAL"), false, &[]).keeps("docker::HAL"));
        assert!(!f(Some("HAL"), true, &[]).keeps("docker::HAL"));
        assert!(f(Some("docker::HAL"), true, &[]).keeps("docker::HAL"));
        assert!(!f(None, false, &["HA"]).keeps("docker::HAL"));
        assert!(f(None, true, &["HA"]).keeps("docker::HAL"));
        assert!(!f(None, true, &["docker::HAL"]).keeps("docker::HAL"));
    }
}
