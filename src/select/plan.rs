//! Which cases run: the command line's selection applied to the catalog and the spec.
//!
//! - `--image X`: every model X serves; on the spec's shared images only the first model of
//!   each group unless `--all-models`.
//! - `--model A,B`: exactly those models.
//! - `--modelgroup G,H`: the models of every listed group (again one per group on shared images
//!   unless `--all-models`).
//! - nothing: every image of the catalog, as with `--image`.
//!
//! The flags add up: `--image X --model Y` runs X's models and Y. Spaces around the items of a
//! comma list are trimmed; an empty item is an error naming the flag.
//!
//! Each selected model becomes one case per runtime. Unknown names are errors that name the
//! closest matches, before anything runs.

use std::collections::BTreeSet;

use thiserror::Error;

use crate::config::spec::{CasePlan, Spec};
use crate::partition::Partition;
use crate::select::catalog::{group_of, Catalog, SifEntry};

pub use crate::record::RuntimeName;

/// What the user asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub images: Vec<String>,
    pub models: Vec<String>,
    pub groups: Vec<String>,
    pub all_models: bool,
    pub slim: bool,
    pub runtimes: Vec<RuntimeName>,
    pub timeout: Option<std::time::Duration>,
    pub partition: Option<Partition>,
}

/// One test: a model in one runtime.
#[derive(Debug, Clone)]
pub struct Case {
    /// `runtime::model`, the name libtest-mimic shows and filters on.
    pub name: String,
    pub model: String,
    pub runtime: RuntimeName,
    /// The Docker image (with `-slim` when asked); for Singularity, where the SIF comes from.
    pub image: String,
    pub sif: Option<SifEntry>,
    pub plan: CasePlan,
}

#[cfg(test)]
impl Case {
    /// A Docker case of `model` on `image` for unit tests: command `x`, a 1 s timeout.
    pub fn for_test(model: &str, image: &str) -> Case {
        Case {
            name: format!("docker::{model}"),
            model: model.into(),
            runtime: RuntimeName::new("docker"),
            image: image.into(),
            sif: None,
            plan: CasePlan {
                command: vec!["x".into()],
                workdir: None,
                timeout: std::time::Duration::from_secs(1),
                memory: None,
                skip: None,
                expect_failure: None,
                predictions: None,
            },
        }
    }
}

/// A selection the catalog cannot satisfy, found before anything runs.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    /// A name the catalog does not know, with the closest ones it does.
    #[error("unknown {kind} `{name}`{}", did_you_mean(.suggestions))]
    Unknown {
        /// `model`, `model group` or `image`.
        kind: &'static str,
        name: String,
        suggestions: Vec<String>,
    },
    /// `--model a,,b`, `--model ''` or a trailing comma.
    #[error(
        "`{flag}` got an empty {what} (as in `a,,b`, a trailing comma, or ''): name each {what}, \
         separated by commas"
    )]
    EmptyItem {
        flag: &'static str,
        what: &'static str,
    },
}

fn did_you_mean(suggestions: &[String]) -> String {
    match suggestions {
        [] => " (no close match in the catalog)".to_string(),
        [one] => format!("; did you mean `{one}`?"),
        many => format!(
            "; did you mean one of {}?",
            many.iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Up to three names from `candidates` close to `word`, best first.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let unique: BTreeSet<&str> = candidates.into_iter().collect();
    let list: Vec<&str> = unique.into_iter().collect();
    let mut found: Vec<String> = similar::get_close_matches(word, &list, 3, 0.6)
        .into_iter()
        .map(str::to_string)
        .collect();
    // Case slips ("basenji") score low on character ratio; catch them directly.
    if found.is_empty() {
        found = list
            .iter()
            .filter(|c| c.eq_ignore_ascii_case(word))
            .map(|c| c.to_string())
            .collect();
    }
    found
}

/// The values of a selection flag with the spaces around each trimmed (`--model 'A, B'`).
/// An item that is empty after trimming is an error naming the flag.
fn trimmed(
    values: &[String],
    flag: &'static str,
    what: &'static str,
) -> Result<Vec<String>, PlanError> {
    values
        .iter()
        .map(|v| match v.trim() {
            "" => Err(PlanError::EmptyItem { flag, what }),
            name => Ok(name.to_string()),
        })
        .collect()
}

/// The cases a selection makes. The selection flags add up: every model that `--image`,
/// `--modelgroup` or `--model` selects runs, once (the first flag, in that order, that selects
/// it decides its image). None narrows another; libtest's FILTER, `--skip` and `--exact`
/// narrow, after this.
pub fn plan(catalog: &Catalog, spec: &Spec, sel: &Selection) -> Result<Vec<Case>, PlanError> {
    let sel_images = trimmed(&sel.images, "--image", "image")?;
    let sel_groups = trimmed(&sel.groups, "--modelgroup", "group")?;
    let sel_models = trimmed(&sel.models, "--model", "model")?;
    // (model, image it runs in): `--image` runs a model in the image named, the other modes in
    // the image the catalog maps the model to.
    let mut picked: Vec<(String, String)> = Vec::new();
    let nothing_selected = sel_images.is_empty() && sel_models.is_empty() && sel_groups.is_empty();
    let images: Vec<String> = if nothing_selected {
        catalog.served_images().map(str::to_string).collect()
    } else {
        sel_images
    };
    for image in &images {
        for model in models_of_image(catalog, spec, image, sel.all_models)? {
            picked.push((model, image.clone()));
        }
    }
    for group in &sel_groups {
        for model in models_of_group(catalog, spec, group, sel.all_models)? {
            let image = catalog.image_for(&model).unwrap_or_default().to_string();
            picked.push((model, image));
        }
    }
    for model in &sel_models {
        let image = check_model(catalog, model)?;
        picked.push((model.clone(), image.to_string()));
    }

    let mut seen = BTreeSet::new();
    picked.retain(|(m, _)| seen.insert(m.clone()));
    let runtimes = if sel.runtimes.is_empty() {
        vec![crate::runtime::DOCKER]
    } else {
        sel.runtimes.clone()
    };
    let mut cases = Vec::new();
    for runtime in runtimes {
        for (model, image) in &picked {
            let image = if sel.slim && !image.ends_with("-slim") {
                format!("{image}-slim")
            } else {
                image.clone()
            };
            cases.push(Case {
                name: format!("{runtime}::{model}"),
                model: model.clone(),
                runtime,
                image,
                sif: catalog.sif_for(model).cloned(),
                plan: spec.plan_for(model, sel.timeout),
            });
        }
    }
    Ok(match sel.partition {
        Some(p) => p.keep(cases, |c| c.name.as_str()),
        None => cases,
    })
}

fn models_of_image(
    catalog: &Catalog,
    spec: &Spec,
    image: &str,
    all_models: bool,
) -> Result<Vec<String>, PlanError> {
    // `--image X-slim` is the slim variant of X: same models.
    let bare = image.strip_suffix("-slim").unwrap_or(image);
    let models = catalog
        .models_of_image(bare)
        .ok_or_else(|| PlanError::Unknown {
            kind: "image",
            name: image.to_string(),
            suggestions: closest(image, catalog.images()),
        })?;
    let models = models.to_vec();
    Ok(if spec.is_shared_image(bare) && !all_models {
        one_per_group(models)
    } else {
        models
    })
}

fn models_of_group(
    catalog: &Catalog,
    spec: &Spec,
    group: &str,
    all_models: bool,
) -> Result<Vec<String>, PlanError> {
    if !catalog.has_group(group) {
        return Err(PlanError::Unknown {
            kind: "model group",
            name: group.to_string(),
            suggestions: closest(group, catalog.groups()),
        });
    }
    let models = catalog.models_of_group(group);
    let shared = catalog
        .image_for(group)
        .is_some_and(|image| spec.is_shared_image(image));
    Ok(if shared && !all_models {
        one_per_group(models)
    } else {
        models
    })
}

/// A model is known when the catalog maps it (or its group) to an image, and, where the image's
/// model list is known, that list holds it. Returns the image.
fn check_model<'a>(catalog: &'a Catalog, model: &str) -> Result<&'a str, PlanError> {
    let unknown = || PlanError::Unknown {
        kind: "model",
        name: model.to_string(),
        suggestions: closest(model, catalog.models().chain(catalog.groups())),
    };
    let image = catalog.image_for(model).ok_or_else(unknown)?;
    match catalog.models_of_image(image) {
        Some(listed)
            if !listed.iter().any(|m| m == model) && catalog.models_of_group(model).is_empty() =>
        {
            Err(unknown())
        }
        _ => Ok(image),
    }
}

fn one_per_group(models: Vec<String>) -> Vec<String> {
    let mut groups = BTreeSet::new();
    models
        .into_iter()
        .filter(|m| groups.insert(group_of(m).to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn kipoi() -> (Catalog, Spec) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let spec = Spec::load(&root.join("test-specs/kipoi.toml")).unwrap();
        let catalog = Catalog::load(&root.join("test-specs/kipoi")).unwrap();
        (catalog, spec)
    }

    fn names(cases: &[Case]) -> Vec<&str> {
        cases.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn shared_image_runs_one_model_per_group() {
        let (cat, spec) = kipoi();
        let sel = Selection {
            images: vec!["kipoi/kipoi-docker:sharedpy3keras2tf2".into()],
            ..Default::default()
        };
        let cases = plan(&cat, &spec, &sel).unwrap();
        let groups: BTreeSet<&str> = cases.iter().map(|c| group_of(&c.model)).collect();
        assert_eq!(groups.len(), cases.len(), "one model per group");
        assert!(groups.contains("HAL") && groups.contains("Basset"));
        let all = plan(
            &cat,
            &spec,
            &Selection {
                all_models: true,
                ..sel
            },
        )
        .unwrap();
        assert_eq!(all.len(), 618);
    }

    #[test]
    fn non_shared_image_runs_every_model() {
        let (cat, spec) = kipoi();
        let sel = Selection {
            images: vec!["kipoi/kipoi-docker:mmsplice".into()],
            ..Default::default()
        };
        let cases = plan(&cat, &spec, &sel).unwrap();
        assert_eq!(cases.len(), 4);
        assert!(cases
            .iter()
            .all(|c| c.image == "kipoi/kipoi-docker:mmsplice"));
    }

    #[test]
    fn models_run_exactly_with_their_extras() {
        let (cat, spec) = kipoi();
        let sel = Selection {
            models: vec!["KipoiSplice/4".into(), "Basenji".into()],
            ..Default::default()
        };
        let cases = plan(&cat, &spec, &sel).unwrap();
        assert_eq!(names(&cases), ["docker::KipoiSplice/4", "docker::Basenji"]);
        assert_eq!(cases[0].image, "kipoi/kipoi-docker:kipoisplice");
        assert_eq!(cases[1].plan.command.last().unwrap(), "--batch_size=2");
    }

    #[test]
    fn every_listed_group_runs() {
        let (cat, spec) = kipoi();
        let sel = Selection {
            groups: vec!["HAL".into(), "Basset".into(), "MMSplice".into()],
            ..Default::default()
        };
        let cases = plan(&cat, &spec, &sel).unwrap();
        let groups: BTreeSet<&str> = cases.iter().map(|c| group_of(&c.model)).collect();
        assert_eq!(groups, BTreeSet::from(["HAL", "Basset", "MMSplice"]));
        // MMSplice is not on a shared image: all five models (two images).
        assert_eq!(
            cases
                .iter()
                .filter(|c| c.model.starts_with("MMSplice/"))
                .count(),
            5
        );
    }

    #[test]
    fn slim_and_runtimes_multiply_cases() {
        let (cat, spec) = kipoi();
        let sel = Selection {
            models: vec!["Basenji".into()],
            slim: true,
            runtimes: vec![crate::runtime::DOCKER, crate::runtime::APPTAINER],
            ..Default::default()
        };
        let cases = plan(&cat, &spec, &sel).unwrap();
        assert_eq!(names(&cases), ["docker::Basenji", "singularity::Basenji"]);
        assert_eq!(cases[0].image, "kipoi/kipoi-docker:sharedpy3keras2tf1-slim");
        assert!(cases[1].sif.as_ref().unwrap().name.ends_with("-slim"));
    }

    #[test]
    fn an_image_named_on_the_command_line_is_the_one_used() {
        let (cat, spec) = kipoi();
        let sel = Selection {
            images: vec!["kipoi/kipoi-docker:mmsplice-slim".into()],
            ..Default::default()
        };
        let cases = plan(&cat, &spec, &sel).unwrap();
        assert_eq!(cases.len(), 4);
        assert!(cases
            .iter()
            .all(|c| c.image == "kipoi/kipoi-docker:mmsplice-slim"));
        let everything = plan(&cat, &spec, &Selection::default()).unwrap();
        let images: BTreeSet<&str> = everything.iter().map(|c| c.image.as_str()).collect();
        assert_eq!(images.len(), 19);
    }

    #[test]
    fn partitions_split_the_plan() {
        let (cat, spec) = kipoi();
        let all = plan(&cat, &spec, &Selection::default()).unwrap();
        let mut seen = 0;
        for m in 1..=3 {
            let sel = Selection {
                partition: Some(format!("hash:{m}/3").parse().unwrap()),
                ..Default::default()
            };
            let shard = plan(&cat, &spec, &sel).unwrap();
            assert!(shard.len() < all.len());
            seen += shard.len();
        }
        assert_eq!(seen, all.len());
    }

    #[test]
    fn spaces_around_list_items_are_trimmed() {
        let (cat, spec) = kipoi();
        let spaced = Selection {
            models: vec![" KipoiSplice/4".into(), "Basenji ".into()],
            groups: vec!["\tHAL ".into()],
            images: vec![" kipoi/kipoi-docker:mmsplice".into()],
            ..Default::default()
        };
        let tight = Selection {
            models: vec!["KipoiSplice/4".into(), "Basenji".into()],
            groups: vec!["HAL".into()],
            images: vec!["kipoi/kipoi-docker:mmsplice".into()],
            ..Default::default()
        };
        let spaced = plan(&cat, &spec, &spaced).unwrap();
        let tight = plan(&cat, &spec, &tight).unwrap();
        assert_eq!(names(&spaced), names(&tight));
        assert!(names(&spaced).contains(&"docker::Basenji"));
        assert!(spaced
            .iter()
            .all(|c| c.image.trim() == c.image && c.model.trim() == c.model));
    }

    #[test]
    fn an_empty_list_item_names_its_flag() {
        let (cat, spec) = kipoi();
        let cases = [
            (
                Selection {
                    models: vec!["Basenji".into(), "".into(), "HAL".into()],
                    ..Default::default()
                },
                "--model",
            ),
            (
                Selection {
                    groups: vec!["HAL".into(), "  ".into()],
                    ..Default::default()
                },
                "--modelgroup",
            ),
            (
                Selection {
                    images: vec!["".into()],
                    ..Default::default()
                },
                "--image",
            ),
        ];
        for (sel, flag) in cases {
            let err = plan(&cat, &spec, &sel).unwrap_err();
            assert!(matches!(err, PlanError::EmptyItem { flag: f, .. } if f == flag));
            let text = err.to_string();
            assert!(text.contains(flag) && text.contains("empty"), "{text}");
        }
    }

    #[test]
    fn selection_flags_add_up() {
        let (cat, spec) = kipoi();
        let image = || vec!["kipoi/kipoi-docker:mmsplice".to_string()];
        let group = || vec!["HAL".to_string(), "MMSplice".to_string()];
        let model = || vec!["Basenji".to_string(), "KipoiSplice/4".to_string()];
        let models_of = |sel: Selection| -> BTreeSet<String> {
            let cases = plan(&cat, &spec, &sel).unwrap();
            let set: BTreeSet<String> = cases.iter().map(|c| c.model.clone()).collect();
            assert_eq!(set.len(), cases.len(), "each model once");
            set
        };
        let by_image = models_of(Selection {
            images: image(),
            ..Default::default()
        });
        let by_group = models_of(Selection {
            groups: group(),
            ..Default::default()
        });
        let by_model = models_of(Selection {
            models: model(),
            ..Default::default()
        });
        assert!(!by_image.is_empty() && !by_group.is_empty() && !by_model.is_empty());
        // Every pair of flags and all three: the union, never the intersection.
        let combos = [
            (true, true, false),
            (true, false, true),
            (false, true, true),
            (true, true, true),
        ];
        for (i, g, m) in combos {
            let sel = Selection {
                images: if i { image() } else { vec![] },
                groups: if g { group() } else { vec![] },
                models: if m { model() } else { vec![] },
                ..Default::default()
            };
            let mut want = BTreeSet::new();
            for (on, set) in [(i, &by_image), (g, &by_group), (m, &by_model)] {
                if on {
                    want.extend(set.iter().cloned());
                }
            }
            assert_eq!(models_of(sel), want, "image {i}, group {g}, model {m}");
        }
        // The overlap runs once, in the image `--image` named.
        let both = plan(
            &cat,
            &spec,
            &Selection {
                images: image(),
                models: vec!["MMSplice/deltaLogitPSI".into()],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(both.len(), by_image.len());
        assert!(both
            .iter()
            .all(|c| c.image == "kipoi/kipoi-docker:mmsplice"));
    }

    #[test]
    fn unknown_names_suggest_close_matches() {
        let (cat, spec) = kipoi();
        let run = |sel: Selection| plan(&cat, &spec, &sel).unwrap_err().to_string();
        let err = run(Selection {
            models: vec!["Basenj".into()],
            ..Default::default()
        });
        assert!(
            err.contains("unknown model `Basenj`") && err.contains("`Basenji`"),
            "{err}"
        );
        let err = run(Selection {
            models: vec!["KipoiSplice/44".into()],
            ..Default::default()
        });
        assert!(err.contains("KipoiSplice/4"), "{err}");
        let err = run(Selection {
            groups: vec!["hal".into()],
            ..Default::default()
        });
        assert!(
            err.contains("group `hal`") && err.contains("`HAL`"),
            "{err}"
        );
        let err = run(Selection {
            images: vec!["kipoi/kipoi-docker:mmsplic".into()],
            ..Default::default()
        });
        assert!(err.contains("`kipoi/kipoi-docker:mmsplice`"), "{err}");
        let err = run(Selection {
            models: vec!["zzzzzzzz".into()],
            ..Default::default()
        });
        assert!(err.contains("no close match"), "{err}");
    }
}
