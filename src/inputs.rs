//! From the selection flags to the cases: loads the spec and the catalog it names, and plans the
//! cases the selection asks for. A run and `matrix` share it, so both see the same cases.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::catalog::Catalog;
use crate::cli::{SelectionArgs, DEFAULT_SPEC};
use crate::partition::Partition;
use crate::plan::{self, Case, Selection};
use crate::spec::Spec;

/// What a selection names, checked: every error here is an input error (exit 2).
pub struct Inputs {
    pub spec: Spec,
    pub cases: Vec<Case>,
}

/// Per-run settings that change which cases are planned, or how: not part of the selection a
/// matrix hands out, because each job adds its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    pub timeout: Option<Duration>,
    pub partition: Option<Partition>,
    /// libtest's `--ignored`: only what the spec marks skip.
    pub only_skipped: bool,
}

impl Inputs {
    pub fn load(selection: &SelectionArgs, options: PlanOptions) -> anyhow::Result<Inputs> {
        let spec_path = resolve_default(&selection.spec, DEFAULT_SPEC);
        let spec = Spec::load(&spec_path)?;
        let catalog_dir = selection
            .catalog
            .clone()
            .or_else(|| spec.catalog.clone())
            .with_context(|| {
                format!(
                    "no catalog: pass --catalog DIR, or name one in `{}` (catalog = \"...\")",
                    spec_path.display()
                )
            })?;
        let catalog = Catalog::load(&catalog_dir)?;
        let plan_selection = Selection {
            images: selection.image.clone(),
            models: selection.model.clone(),
            groups: selection.modelgroup.clone(),
            all_models: selection.all_models,
            slim: selection.slim,
            runtimes: selection.runtime.kinds(),
            timeout: options.timeout,
            partition: options.partition,
        };
        let mut cases = plan::plan(&catalog, &spec, &plan_selection)?;
        if options.only_skipped {
            cases.retain(|c| c.plan.skip.is_some());
        }
        Ok(Inputs { spec, cases })
    }
}

/// The shipped default spec is found from the source tree when run from elsewhere.
fn resolve_default(given: &Path, default: &str) -> PathBuf {
    if given == Path::new(default) && !given.exists() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(default);
        if shipped.exists() {
            return shipped;
        }
    }
    given.to_path_buf()
}
