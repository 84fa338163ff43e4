//! `matrix --max-job-time DURATION --durations PATH`: the number of shards picked so that each
//! job's expected time, its pulls included, fits the limit; a model that alone exceeds it named;
//! a selection that cannot fit in GitHub's 256 jobs refused with what to do.

use std::collections::BTreeMap;

use crate::helpers::*;

/// A zoo of `(model, image, seconds)` with a durations report whose suites record each image's
/// pull (`pulls`: image -> seconds). Returns the spec and the report.
fn zoo(
    dir: &std::path::Path,
    cases: &[(String, String, f64)],
    pulls: &[(&str, f64)],
) -> (String, String) {
    let pairs: Vec<(&str, &str)> = cases
        .iter()
        .map(|(m, i, _)| (m.as_str(), i.as_str()))
        .collect();
    write_catalog(&dir.join("catalog"), &pairs, None);
    std::fs::write(
        dir.join("spec.toml"),
        "catalog = \"catalog\"\ncommand = \"true\"\nnetwork = \"none\"\n",
    )
    .unwrap();
    let mut by_image: BTreeMap<&str, Vec<(&str, f64)>> = BTreeMap::new();
    for (m, i, secs) in cases {
        by_image.entry(i).or_default().push((m, *secs));
    }
    let mut xml =
        String::from("<testsuites name=\"zoo-runner\" tests=\"0\" failures=\"0\" errors=\"0\">\n");
    for (image, models) in by_image {
        xml.push_str(&format!(
            "<testsuite name=\"docker:{image}\" tests=\"0\" failures=\"0\" errors=\"0\">\n"
        ));
        if let Some((_, secs)) = pulls.iter().find(|(i, _)| *i == image) {
            xml.push_str(&format!(
                "<properties><property name=\"pull-seconds\" value=\"{secs:.3}\"/></properties>\n"
            ));
        }
        for (m, secs) in models {
            xml.push_str(&format!(
                "<testcase name=\"{m}\" classname=\"docker:{image}\" time=\"{secs:.3}\"/>\n"
            ));
        }
        xml.push_str("</testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    std::fs::write(dir.join("durations.xml"), xml).unwrap();
    (
        dir.join("spec.toml").display().to_string(),
        dir.join("durations.xml").display().to_string(),
    )
}

fn matrix_run(args: &[&str]) -> Run {
    let mut all = vec!["matrix"];
    all.extend(args);
    runner(&all)
}

#[test]
fn the_fewest_jobs_that_fit_the_limit_with_their_pulls() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    // Four images of 20 models of 3 minutes each (an hour per image), each pulled in 10 min;
    // one model takes 2 hours on its own.
    let mut cases = Vec::new();
    for i in 0..4 {
        for m in 0..20 {
            cases.push((format!("G{i}/m{m:02}"), format!("zoo/img-{i}:v1"), 180.0));
        }
    }
    cases.push((
        "Huge/one".to_string(),
        "zoo/img-huge:v1".to_string(),
        7200.0,
    ));
    let pulls = [
        ("zoo/img-0:v1", 600.0),
        ("zoo/img-1:v1", 600.0),
        ("zoo/img-2:v1", 600.0),
        ("zoo/img-3:v1", 600.0),
        ("zoo/img-huge:v1", 600.0),
    ];
    let (spec, durations) = zoo(dir.path(), &cases, &pulls);
    let run = matrix_run(&[
        "--spec",
        &spec,
        "--max-job-time",
        "90m",
        "--durations",
        &durations,
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains(
            "zoo-runner: warning: matrix: docker::Huge/one alone is expected to take about \
             2h10m (its recorded time, and its image's pull), more than --max-job-time 1h30m"
        ),
        "{}",
        run.all()
    );
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let jobs: Vec<String> = v["include"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["args"].as_str().unwrap().to_string())
        .collect();
    // An hour of cases and a 10-minute pull fit 90 minutes: one job per image, and the huge one.
    assert_eq!(jobs.len(), 5, "{}", run.all());
    assert!(
        run.stderr.contains(
            "zoo-runner: matrix: --max-job-time 1h30m: 5 job(s), the longest expected \
                 to take about 1h10m with its pulls (but those of the models named above)"
        ),
        "{}",
        run.all()
    );
    let secs: BTreeMap<String, (String, f64)> = cases
        .iter()
        .map(|(m, i, s)| (format!("docker::{m}"), (i.clone(), *s)))
        .collect();
    let mut all = Vec::new();
    for args in &jobs {
        assert!(args.contains("--partition time:"), "{args}");
        let listed = zoo::list_through_shell(args, &[]);
        let mut images: Vec<&str> = listed.iter().map(|c| secs[c].0.as_str()).collect();
        images.sort_unstable();
        images.dedup();
        let expected: f64 =
            listed.iter().map(|c| secs[c].1).sum::<f64>() + 600.0 * images.len() as f64;
        assert!(
            expected <= 90.0 * 60.0 || listed == ["docker::Huge/one"],
            "{args}: {listed:?} takes {expected}s"
        );
        all.extend(listed);
    }
    assert_eq!(all.len(), cases.len());

    // A tighter limit takes more jobs; the pulls count: 40 minutes of cases fit 45 minutes
    // only without their pull.
    let run = matrix_run(&[
        "--spec",
        &spec,
        "--max-job-time",
        "45m",
        "--durations",
        &durations,
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(v["include"].as_array().unwrap().len() > 9, "{}", run.all());
}

#[test]
fn a_selection_beyond_256_jobs_is_refused_with_what_to_do() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(String, String, f64)> = (0..300)
        .map(|m| {
            (
                format!("G/m{m:03}"),
                format!("zoo/img-{}:v1", m % 30),
                3000.0,
            )
        })
        .collect();
    let (spec, durations) = zoo(dir.path(), &cases, &[]);
    let run = matrix_run(&[
        "--spec",
        &spec,
        "--max-job-time",
        "1h",
        "--durations",
        &durations,
    ]);
    assert_eq!(run.code, 2, "{}", run.all());
    let said = normalise::transcript(
        &[
            "matrix",
            "--spec",
            &spec,
            "--max-job-time",
            "1h",
            "--durations",
            &durations,
        ],
        &run,
    );
    let missing = matrix_run(&["--spec", &spec, "--max-job-time", "1h"]);
    assert_eq!(missing.code, 2, "--durations is needed: {}", missing.all());
    let said = said
        + &normalise::transcript(
            &["matrix", "--spec", &spec, "--max-job-time", "1h"],
            &missing,
        );
    normalise::messages().bind(|| insta::assert_snapshot!("max_job_time_refused", said));
}
