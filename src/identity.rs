//! Whose containers these are: a pid proves a run alive or dead only on the machine and in the
//! PID namespace it was taken in. The runner labels its containers with both (the kernel's
//! boot id, and the inode of its PID namespace), and judges only containers whose labels match
//! its own; a runner inside a CI container sharing the host's daemon, under `unshare -p`, or on
//! another host pointing at the same `DOCKER_HOST` leaves the others' containers alone.

use std::collections::HashMap;

use crate::runtime::docker::{LABEL_BOOT, LABEL_PID_NS};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `/proc/sys/kernel/random/boot_id`: new at every boot of the machine (or VM).
    pub boot_id: String,
    /// The PID namespace, as `/proc/self/ns/pid` reads (`pid:[4026531836]`).
    pub pid_ns: String,
}

impl Identity {
    /// This process's identity; a part that cannot be read is empty, and an empty identity
    /// matches nothing (so nothing is swept on its word).
    pub fn of_this_process() -> Self {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let pid_ns = std::fs::read_link("/proc/self/ns/pid")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self { boot_id, pid_ns }
    }

    /// True when the labels say the container was made by a runner with this identity.
    pub fn made(&self, labels: &HashMap<String, String>) -> bool {
        !self.boot_id.is_empty()
            && !self.pid_ns.is_empty()
            && labels.get(LABEL_BOOT) == Some(&self.boot_id)
            && labels.get(LABEL_PID_NS) == Some(&self.pid_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_an_identity() {
        let me = Identity::of_this_process();
        assert_eq!(me.boot_id.len(), 36, "{me:?}");
        assert!(me.pid_ns.starts_with("pid:["), "{me:?}");
    }

    #[test]
    fn only_the_same_boot_and_namespace_match() {
        let me = Identity::of_this_process();
        let labels = |boot: &str, ns: &str| {
            HashMap::from([
                (LABEL_BOOT.to_string(), boot.to_string()),
                (LABEL_PID_NS.to_string(), ns.to_string()),
            ])
        };
        assert!(me.made(&labels(&me.boot_id, &me.pid_ns)));
        assert!(!me.made(&labels(&me.boot_id, "pid:[1]")), "other namespace");
        assert!(!me.made(&labels("other-boot", &me.pid_ns)), "other machine");
        assert!(!me.made(&HashMap::new()), "an older runner's container");
        let blind = Identity {
            boot_id: String::new(),
            pid_ns: String::new(),
        };
        assert!(!blind.made(&labels("", "")));
    }
}
