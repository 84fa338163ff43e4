//! `zoo-runner matrix --slurm --shards N`: instead of CI's JSON, a bash script that submits the
//! zoo to Slurm as a job array of N tasks (one shard each, `--partition time:auto` reading its
//! place from `SLURM_ARRAY_TASK_ID`), each writing its own JUnit report, then a merge job that
//! depends on the whole array (`--dependency=afterany`, so it runs when tasks fail too) and
//! writes the merged report and the summary.
//!
//! The cluster's own settings (partition, account, time, memory, CPUs, modules, the SIF cache)
//! are variables at the top, each with a default and each settable from the environment. The
//! jobs' scripts are quoted heredocs: the task's arguments are the words `matrix` checked, quoted
//! for a POSIX shell, and the settings reach the jobs through the environment sbatch exports.

/// What the script is made from.
pub struct Sbatch<'a> {
    /// The `matrix` command line that made it, for its header.
    pub made_by: &'a str,
    /// How many tasks (shards).
    pub shards: u64,
    /// One task's arguments (quoted), without `--junit`: the selection, `--partition
    /// time:auto`, the durations and the run flags.
    pub task_args: &'a str,
}

/// The script.
pub fn script(s: &Sbatch) -> String {
    let Sbatch {
        made_by,
        shards,
        task_args,
    } = s;
    format!(
        r#"#!/usr/bin/env bash
# zoo-runner on Slurm: an array of {shards} task(s), one shard of the zoo each, then a merge job that
# waits for the whole array (afterany: it runs when tasks fail, too) and writes the merged JUnit
# report and the summary.
#
# Made by: {made_by}
# Submit it from the folder the paths in the task's arguments are relative to:
#     bash THIS-FILE
# Each setting below can also be given in the environment: ZOO_ACCOUNT=mylab bash THIS-FILE
set -euo pipefail

# ---- The cluster's settings: edit these --------------------------------------------------------
ZOO_PARTITION="${{ZOO_PARTITION:-}}"   # sbatch --partition; empty: the cluster's default
ZOO_ACCOUNT="${{ZOO_ACCOUNT:-}}"       # sbatch --account; empty: your default account
ZOO_TIME="${{ZOO_TIME:-6:00:00}}"      # sbatch --time of each task (the merge job gets 15 min)
ZOO_MEM="${{ZOO_MEM:-16G}}"            # sbatch --mem of each task
ZOO_CPUS="${{ZOO_CPUS:-2}}"            # sbatch --cpus-per-task of each task
ZOO_MAX_RUNNING="${{ZOO_MAX_RUNNING:-}}"   # at most this many tasks at once (--array=1-N%K); empty: no limit
ZOO_MODULES="${{ZOO_MODULES:-}}"       # modules each job loads first, e.g. "apptainer"; empty: none
# ---- Where things are ---------------------------------------------------------------------------
ZOO_RUNNER="${{ZOO_RUNNER:-zoo-runner}}"   # the zoo-runner binary, as the compute nodes see it
ZOO_SIF_DIR="${{ZOO_SIF_DIR:-}}"       # the SIF cache all tasks share (a parallel filesystem); empty: the runner's default
ZOO_TMP_DIR="${{ZOO_TMP_DIR:-}}"       # scratch space for --sif-from-docker builds (APPTAINER_TMPDIR); empty: the SIF cache
ZOO_REPORTS="${{ZOO_REPORTS:-$PWD/reports/slurm-$(date +%Y%m%d-%H%M%S)}}"   # reports and logs
# -------------------------------------------------------------------------------------------------

SHARDS={shards}
if compgen -G "$ZOO_REPORTS/shards/*.xml" >/dev/null; then
  echo "$ZOO_REPORTS/shards already holds reports: they would be merged with this run's; pick another ZOO_REPORTS" >&2
  exit 2
fi
mkdir -p "$ZOO_REPORTS/shards" "$ZOO_REPORTS/logs"
# The jobs get the submitter's environment (sbatch's default --export=ALL).
export ZOO_RUNNER ZOO_REPORTS ZOO_MODULES SHARDS
[ -z "$ZOO_SIF_DIR" ] || export SINGULARITY_PULL_FOLDER="$ZOO_SIF_DIR"
[ -z "$ZOO_TMP_DIR" ] || export APPTAINER_TMPDIR="$ZOO_TMP_DIR"
cluster=()
[ -z "$ZOO_PARTITION" ] || cluster+=(--partition "$ZOO_PARTITION")
[ -z "$ZOO_ACCOUNT" ] || cluster+=(--account "$ZOO_ACCOUNT")
tasks="1-$SHARDS${{ZOO_MAX_RUNNING:+%$ZOO_MAX_RUNNING}}"

array=$(sbatch --parsable "${{cluster[@]}}" --job-name zoo-shards --array "$tasks" \
  --time "$ZOO_TIME" --mem "$ZOO_MEM" --cpus-per-task "$ZOO_CPUS" \
  --output "$ZOO_REPORTS/logs/shard-%a.out" <<'TASK'
#!/usr/bin/env bash
# One shard of the zoo: --partition time:auto reads which from SLURM_ARRAY_TASK_ID.
[ -z "$ZOO_MODULES" ] || module load $ZOO_MODULES
exec "$ZOO_RUNNER" {task_args} \
  --junit "$ZOO_REPORTS/shards/shard-$SLURM_ARRAY_TASK_ID.xml"
TASK
)
array=${{array%%;*}}

merge=$(sbatch --parsable "${{cluster[@]}}" --job-name zoo-merge --dependency "afterany:$array" \
  --time 0:15:00 --mem 2G --output "$ZOO_REPORTS/logs/merge.out" <<'MERGE'
#!/usr/bin/env bash
# The merged report of what the tasks wrote. A task that wrote none (cancelled, out of time, its
# node lost) is named, and this job then fails, after merging the others.
[ -z "$ZOO_MODULES" ] || module load $ZOO_MODULES
missing=()
for i in $(seq 1 "$SHARDS"); do
  [ -f "$ZOO_REPORTS/shards/shard-$i.xml" ] || missing+=("$i")
done
if [ ${{#missing[@]}} -lt "$SHARDS" ]; then
  "$ZOO_RUNNER" merge --junit "$ZOO_REPORTS/junit.xml" --summary "$ZOO_REPORTS/summary.md" \
    "$ZOO_REPORTS/shards"
fi
if [ ${{#missing[@]}} -gt 0 ]; then
  echo "zoo-runner: shard(s) ${{missing[*]}} of $SHARDS wrote no report: see $ZOO_REPORTS/logs/shard-N.out" >&2
  exit 1
fi
MERGE
)
merge=${{merge%%;*}}

echo "submitted the array $array ($SHARDS task(s)) and the merge job $merge, which waits for it"
echo "reports: $ZOO_REPORTS/shards/; merged: $ZOO_REPORTS/junit.xml and $ZOO_REPORTS/summary.md"
"#
    )
}
