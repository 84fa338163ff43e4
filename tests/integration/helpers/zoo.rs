//! Generated zoos for the CI-matrix tests: a catalog and spec in a temporary folder, earlier
//! running times as a JUnit report the way the runner writes it, and the cases a command line
//! selects, listed by the real binary through a POSIX shell.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use super::{bin, root, write_catalog};

/// A seeded generator (xorshift64*): the same zoo on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Log-normal around `median`: a heavy tail, as model test times have.
    pub fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        median * (sigma * normal).exp()
    }
}

/// A zoo written to disk: `spec.toml` (command `true`, never run by these tests) and its
/// catalog, with each model's image and earlier time.
pub struct Zoo {
    pub dir: tempfile::TempDir,
    /// model -> (image, seconds)
    pub models: BTreeMap<String, (String, f64)>,
}

impl Zoo {
    pub fn spec(&self) -> String {
        self.dir.path().join("spec.toml").display().to_string()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the earlier times as a JUnit report (one suite per image, as a run writes it).
    pub fn write_durations(&self, name: &str) -> String {
        let mut by_image: BTreeMap<&str, Vec<(&str, f64)>> = BTreeMap::new();
        for (model, (image, secs)) in &self.models {
            by_image.entry(image).or_default().push((model, *secs));
        }
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"zoo-runner\" tests=\"0\" failures=\"0\" errors=\"0\" time=\"0\">\n");
        for (image, cases) in by_image {
            xml.push_str(&format!(
                "  <testsuite name=\"docker:{}\" tests=\"{}\" failures=\"0\" errors=\"0\" skipped=\"0\" time=\"0\">\n",
                escape(image),
                cases.len()
            ));
            for (model, secs) in cases {
                xml.push_str(&format!(
                    "    <testcase name=\"{}\" classname=\"docker:{}\" time=\"{secs:.3}\">\n    </testcase>\n",
                    escape(model),
                    escape(image)
                ));
            }
            xml.push_str("  </testsuite>\n");
        }
        xml.push_str("</testsuites>\n");
        let path = self.path(name);
        std::fs::write(&path, xml).unwrap();
        path.display().to_string()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// Writes a zoo: images with the given numbers of models, each model's time log-normal around
/// an image-specific median. `odd` adds models whose names need shell quoting.
pub fn generate(sizes: &[usize], seed: u64, odd: bool) -> Zoo {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(seed);
    let mut models = BTreeMap::new();
    for (i, &size) in sizes.iter().enumerate() {
        let image = format!("zoo/image-{i:02}:v1");
        let median = rng.log_normal(60.0, 0.8);
        for m in 0..size {
            let secs = rng.log_normal(median, 1.2).clamp(0.5, 4.0 * 3600.0);
            models.insert(format!("G{i}/m{m:04}"), (image.clone(), secs));
        }
    }
    if odd {
        for name in ["odd group/it's a model", "Dollar$/`tick` \"q\" ;|&"] {
            models.insert(name.to_string(), ("zoo/odd image:v1".to_string(), 30.0));
        }
    }
    let pairs: Vec<(&str, &str)> = models
        .iter()
        .map(|(m, (i, _))| (m.as_str(), i.as_str()))
        .collect();
    write_catalog(&dir.path().join("catalog"), &pairs, None);
    std::fs::write(
        dir.path().join("spec.toml"),
        "catalog = \"catalog\"\ncommand = \"true\"\nnetwork = \"none\"\ntimeout = \"5m\"\n",
    )
    .unwrap();
    Zoo { dir, models }
}

/// One job of a matrix.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub args: String,
}

/// Runs `zoo-runner matrix ARGS` and reads its one line of JSON.
pub fn matrix(args: &[&str]) -> Vec<Job> {
    let out = Command::new(bin())
        .current_dir(root())
        .arg("matrix")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "matrix {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "one line of JSON: {stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("the matrix is JSON");
    json["include"]
        .as_array()
        .expect("an include list")
        .iter()
        .map(|job| Job {
            name: job["name"].as_str().expect("a name").to_string(),
            args: job["args"].as_str().expect("args").to_string(),
        })
        .collect()
}

/// The case names `zoo-runner ARGS --list --format json` prints, with ARGS given as one string
/// that a POSIX shell splits (as a CI job's `run: zoo-runner ${{ matrix.args }}` does).
pub fn list_through_shell(args: &str, env: &[(&str, &str)]) -> Vec<String> {
    let mut cmd = Command::new("sh");
    cmd.current_dir(root())
        .arg("-c")
        .arg(format!("exec \"$ZOO_RUNNER\" {args} --list --format json"))
        .env("ZOO_RUNNER", bin());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "zoo-runner {args} --list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line per case");
            v["name"].as_str().expect("a name").to_string()
        })
        .collect()
}

/// The images (Docker) a model list names, from a zoo.
pub fn image_of<'a>(zoo: &'a Zoo, case: &str) -> &'a str {
    let model = case.split_once("::").map_or(case, |(_, m)| m);
    &zoo.models[model].0
}

/// Quotes one word for a POSIX shell.
pub fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}
