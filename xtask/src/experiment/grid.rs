//! Grid files (`experiments/*.toml`): the question an experiment answers,
//! the `kusari train` configuration it starts from, the axes it varies (or
//! explicit cells), the seeds, the budget, what is judged and, for clusters,
//! the SLURM resources. docs/grids.md describes the format.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use toml::Spanned;

use super::flags::Flags;

/// Flags the experiment sets for each run; neither a grid file nor the
/// command's `--` overrides may set them.
pub const RUN_FLAGS: &[&str] = &[
    "out",
    "resume",
    "seed",
    "epochs",
    "iterations",
    "time-limit",
    "dataset",
    "data-dir",
];

/// Flags a grid file sets through its `[judge]` table, not its flags (the
/// command's overrides may change them).
const JUDGE_FLAGS: &[&str] = &["eval-every", "eval-samples"];

/// One point of the grid: a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridConfig {
    /// Short name: the table row and the run folder's name.
    pub label: String,
    /// What it sets on top of the base configuration.
    pub flags: Flags,
    /// One line on what it means.
    pub meaning: String,
}

/// How long each run trains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    Epochs(u32),
    Iterations(u64),
    /// Seconds of training time.
    Time(f64),
}

impl Budget {
    /// The `kusari train` flags that set it.
    pub fn flags(self) -> [String; 2] {
        match self {
            Budget::Epochs(e) => ["--epochs".into(), e.to_string()],
            Budget::Iterations(n) => ["--iterations".into(), n.to_string()],
            Budget::Time(s) => ["--time-limit".into(), format!("{s}s")],
        }
    }

    /// `5 epochs`, `3000 iterations`, `10 min`.
    pub fn text(self) -> String {
        match self {
            Budget::Epochs(1) => "1 epoch".into(),
            Budget::Epochs(e) => format!("{e} epochs"),
            Budget::Iterations(n) => format!("{n} iterations"),
            Budget::Time(s) if s >= 60.0 && s % 60.0 == 0.0 => format!("{} min", s / 60.0),
            Budget::Time(s) => format!("{s} s"),
        }
    }

    /// The epochs, when the budget is counted in them.
    pub fn epochs(self) -> Option<u32> {
        match self {
            Budget::Epochs(e) => Some(e),
            _ => None,
        }
    }
}

/// What is judged: MNIST IS, FID and class shares every `every` epochs from
/// `samples` samples (`--eval-every`, `--eval-samples`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judge {
    pub every: f64,
    pub samples: u64,
    /// When set, each finished run is judged once more at its end:
    /// `kusari sample` of this many images from its last snapshot (the
    /// averaged G where the run keeps one), then `kusari eval`; these are
    /// the document's numbers.
    pub final_samples: Option<u64>,
}

/// Resources of each SLURM array task; flags of `--executor slurm` override them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmSettings {
    pub partition: Option<String>,
    /// `--time`, e.g. `02:00:00`.
    pub time: Option<String>,
    pub cpus: Option<u32>,
    pub gpus: Option<u32>,
    pub mem: Option<String>,
    /// Extra `#SBATCH` lines, as written.
    pub extra: Vec<String>,
}

/// An experiment read from a grid file.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub name: String,
    /// The file it was read from.
    pub path: PathBuf,
    pub question: String,
    /// `kusari train OBJECTIVE`.
    pub objective: String,
    /// Flags every run shares.
    pub base: Flags,
    /// The cells, in table order.
    pub cells: Vec<GridConfig>,
    /// The flags the cells set.
    pub varied: Vec<String>,
    /// Runs per cell: seeds 1..=seeds.
    pub seeds: u32,
    pub budget: Budget,
    pub judge: Option<Judge>,
    pub slurm: SlurmSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGrid {
    name: Option<String>,
    question: String,
    #[serde(default = "default_objective")]
    objective: String,
    seeds: Spanned<u32>,
    budget: Spanned<FileBudget>,
    judge: Option<FileJudge>,
    base: Option<Spanned<toml::Table>>,
    #[serde(default)]
    axis: Vec<Spanned<FileAxis>>,
    #[serde(default)]
    cell: Vec<Spanned<FileValue>>,
    slurm: Option<FileSlurm>,
}

fn default_objective() -> String {
    "ebgan".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBudget {
    epochs: Option<u32>,
    iterations: Option<u64>,
    time: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJudge {
    every: f64,
    samples: u64,
    #[serde(rename = "final")]
    final_samples: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAxis {
    /// The axis of one flag: its name and values.
    flag: Option<String>,
    values: Option<Vec<toml::Value>>,
    labels: Option<Vec<String>>,
    meanings: Option<Vec<String>>,
    /// An axis of named configurations.
    value: Option<Vec<FileValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileValue {
    label: String,
    #[serde(default)]
    flags: toml::Table,
    #[serde(default)]
    meaning: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSlurm {
    partition: Option<String>,
    time: Option<String>,
    cpus: Option<u32>,
    gpus: Option<u32>,
    mem: Option<String>,
    #[serde(default)]
    extra: Vec<String>,
}

/// `line N: ` of a byte offset in `text`.
fn at(text: &str, offset: usize) -> String {
    let line = text[..offset.min(text.len())].matches('\n').count() + 1;
    format!("line {line}")
}

impl Grid {
    /// The grid file of `name_or_path`: a path to a `.toml` file, or the name
    /// of one in `root/experiments/`.
    pub fn locate(name_or_path: &str, root: &Path) -> Result<PathBuf> {
        let looks_like_path = name_or_path.ends_with(".toml") || name_or_path.contains('/');
        let path = if looks_like_path {
            PathBuf::from(name_or_path)
        } else {
            root.join("experiments")
                .join(format!("{name_or_path}.toml"))
        };
        if !path.is_file() {
            let known = Self::builtin_names(root).join(", ");
            bail!(
                "there is no grid file {} (the experiments in experiments/: {known}); give the \
                 name of one of those or the path of a .toml grid file (docs/grids.md)",
                path.display()
            );
        }
        Ok(path)
    }

    /// The names of the grid files in `root/experiments/`.
    pub fn builtin_names(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root.join("experiments"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".toml").map(str::to_string)
            })
            .collect();
        names.sort();
        names
    }

    /// Reads and checks a grid file.
    pub fn load(path: &Path) -> Result<Grid> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the grid file {}", path.display()))?;
        Self::parse(&text, path).with_context(|| format!("in the grid file {}", path.display()))
    }

    /// Parses the text of a grid file read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Grid> {
        let file: FileGrid = toml::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "{}; the format is in docs/grids.md",
                e.to_string().trim_end()
            )
        })?;
        let name = match file.name {
            Some(n) => n,
            None => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        if name.is_empty() || !name.bytes().all(label_byte) {
            bail!("the grid's name `{name}` must be letters, digits, `-`, `_` or `.`");
        }
        let seeds = *file.seeds.get_ref();
        if seeds == 0 {
            bail!(
                "{}: seeds must be at least 1 (3 or more for a document)",
                at(text, file.seeds.span().start)
            );
        }
        let budget_at = at(text, file.budget.span().start);
        let budget = match file.budget.into_inner() {
            FileBudget {
                epochs: Some(e),
                iterations: None,
                time: None,
            } if e > 0 => Budget::Epochs(e),
            FileBudget {
                epochs: None,
                iterations: Some(n),
                time: None,
            } if n > 0 => Budget::Iterations(n),
            FileBudget {
                epochs: None,
                iterations: None,
                time: Some(t),
            } => Budget::Time(parse_duration(&t).with_context(|| {
                format!("{budget_at}: [budget] time = \"{t}\" is not a duration such as \"10m\"")
            })?),
            _ => bail!(
                "{budget_at}: [budget] needs exactly one of epochs, iterations or time, above zero \
                 (e.g. `epochs = 5` or `time = \"10m\"`)"
            ),
        };
        let judge = match file.judge {
            Some(j) => {
                if !(j.every.is_finite() && j.every > 0.0)
                    || j.samples < 2
                    || j.final_samples.is_some_and(|n| n < 2)
                {
                    bail!(
                        "[judge] needs every > 0 (epochs between evaluations), samples ≥ 2 and \
                         (if given) final ≥ 2"
                    );
                }
                Some(Judge {
                    every: j.every,
                    samples: j.samples,
                    final_samples: j.final_samples,
                })
            }
            None => None,
        };
        let base = match &file.base {
            Some(table) => {
                let base_at = at(text, table.span().start);
                let base = table_flags(table.get_ref())
                    .with_context(|| format!("{base_at}: in [base]"))?;
                check_unmanaged(&base).with_context(|| format!("{base_at}: in [base]"))?;
                base
            }
            None => Flags::default(),
        };

        let cells = if !file.cell.is_empty() {
            if !file.axis.is_empty() {
                bail!(
                    "{}: a grid has either [[axis]] tables (their cross product) or [[cell]] \
                     tables (explicit cells), not both",
                    at(text, file.cell[0].span().start)
                );
            }
            file.cell
                .iter()
                .map(|c| {
                    value_config(c.get_ref())
                        .with_context(|| format!("{}: in this [[cell]]", at(text, c.span().start)))
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            let mut axes = vec![];
            for axis in &file.axis {
                let where_ = at(text, axis.span().start);
                axes.push(
                    axis_configs(axis.get_ref())
                        .with_context(|| format!("{where_}: in this [[axis]]"))?,
                );
            }
            if axes.is_empty() {
                bail!(
                    "the grid has no [[axis]] and no [[cell]]: say what it varies (docs/grids.md)"
                );
            }
            cross_product(&axes)?
        };
        let mut varied: Vec<String> = vec![];
        for cell in &cells {
            check_unmanaged(&cell.flags).with_context(|| format!("in cell `{}`", cell.label))?;
            for flag in cell.flags.iter() {
                if !varied.contains(&flag.name) {
                    varied.push(flag.name.clone());
                }
            }
        }
        let mut labels: Vec<&str> = cells.iter().map(|c| c.label.as_str()).collect();
        labels.sort_unstable();
        if let Some(w) = labels.windows(2).find(|w| w[0] == w[1]) {
            bail!(
                "two cells are labelled `{}`; labels name the run folders and must differ",
                w[0]
            );
        }
        let slurm = match file.slurm {
            Some(s) => {
                if let Some(line) = s.extra.iter().find(|l| !l.starts_with("#SBATCH ")) {
                    bail!("[slurm] extra lines must each start with `#SBATCH `, got `{line}`");
                }
                SlurmSettings {
                    partition: s.partition,
                    time: s.time,
                    cpus: s.cpus,
                    gpus: s.gpus,
                    mem: s.mem,
                    extra: s.extra,
                }
            }
            None => SlurmSettings::default(),
        };
        Ok(Grid {
            name,
            path: path.to_path_buf(),
            question: file
                .question
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            objective: file.objective,
            base,
            cells,
            varied,
            seeds,
            budget,
            judge,
            slurm,
        })
    }

    /// The `kusari train` flags of every run: the base, then the judge's.
    pub fn shared_flags(&self) -> Flags {
        let mut flags = self.base.clone();
        if let Some(judge) = self.judge {
            flags.set("eval-every", &judge.every.to_string());
            flags.set("eval-samples", &judge.samples.to_string());
        }
        flags
    }
}

fn label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.".contains(&b)
}

/// A flag value as `kusari train` takes it: strings as written, numbers in
/// Rust's shortest form, `true` as a flag without value. `false` leaves the
/// flag out.
fn flag_value(value: &toml::Value) -> Result<Option<String>> {
    Ok(match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(true) => Some(String::new()),
        toml::Value::Boolean(false) => None,
        other => bail!(
            "a flag's value must be a string, a number or a boolean, got {}",
            other.type_str()
        ),
    })
}

fn table_flags(table: &toml::Table) -> Result<Flags> {
    let mut flags = Flags::default();
    for (name, value) in table {
        if name.starts_with('-') {
            bail!(
                "write flag names without the dashes: `{}`",
                name.trim_start_matches('-')
            );
        }
        if let Some(v) = flag_value(value).with_context(|| format!("flag `{name}`"))? {
            flags.set(name, &v);
        }
    }
    Ok(flags)
}

fn check_unmanaged(flags: &Flags) -> Result<()> {
    let managed = |name: &str| RUN_FLAGS.contains(&name) || JUDGE_FLAGS.contains(&name);
    if let Some(flag) = flags.iter().find(|f| managed(&f.name)) {
        bail!(
            "`{}` is set by the experiment itself ([budget], [judge], seeds and run folders); \
             remove it",
            flag.name
        );
    }
    Ok(())
}

fn value_config(value: &FileValue) -> Result<GridConfig> {
    if value.label.is_empty() || !value.label.bytes().all(label_byte) {
        bail!(
            "the label `{}` must be letters, digits, `-`, `_` or `.` (it names a folder)",
            value.label
        );
    }
    Ok(GridConfig {
        label: value.label.clone(),
        flags: table_flags(&value.flags)?,
        meaning: value.meaning.clone(),
    })
}

fn axis_configs(axis: &FileAxis) -> Result<Vec<GridConfig>> {
    match (&axis.flag, &axis.values, &axis.value) {
        (Some(flag), Some(values), None) => {
            if values.is_empty() {
                bail!("`values` is empty: give the values of --{flag} to try");
            }
            let count = values.len();
            for (what, list) in [("labels", &axis.labels), ("meanings", &axis.meanings)] {
                if list.as_ref().is_some_and(|l| l.len() != count) {
                    bail!("`{what}` must have one entry per value ({count})");
                }
            }
            values
                .iter()
                .enumerate()
                .map(|(i, value)| {
                    let text = flag_value(value)?.unwrap_or_default();
                    let label = match &axis.labels {
                        Some(labels) => labels[i].clone(),
                        None => text.clone(),
                    };
                    let mut flags = Flags::default();
                    flags.set(flag, &text);
                    value_config(&FileValue {
                        label,
                        flags: toml::Table::new(),
                        meaning: axis
                            .meanings
                            .as_ref()
                            .map_or_else(|| format!("--{flag} {text}"), |m| m[i].clone()),
                    })
                    .map(|c| GridConfig { flags, ..c })
                })
                .collect()
        }
        (None, None, Some(values)) => {
            if axis.labels.is_some() || axis.meanings.is_some() {
                bail!("`labels` and `meanings` go with `flag` and `values`; a [[axis.value]] has its own label and meaning");
            }
            if values.is_empty() {
                bail!("the axis has no [[axis.value]]");
            }
            values.iter().map(value_config).collect()
        }
        _ => bail!(
            "an [[axis]] is either `flag` with `values` (one flag's values) or a list of \
             [[axis.value]] tables (named configurations), not both or neither"
        ),
    }
}

/// Every combination of one configuration per axis, the first axis
/// varying slowest; labels joined by `_`, meanings by `; `.
fn cross_product(axes: &[Vec<GridConfig>]) -> Result<Vec<GridConfig>> {
    let mut cells = vec![GridConfig {
        label: String::new(),
        flags: Flags::default(),
        meaning: String::new(),
    }];
    for axis in axes {
        let mut next = vec![];
        for cell in &cells {
            for value in axis {
                for flag in value.flags.iter() {
                    if cell.flags.get(&flag.name).is_some() {
                        bail!(
                            "two axes set --{}; each flag belongs to one axis",
                            flag.name
                        );
                    }
                }
                let join = |a: &str, b: &str, sep: &str| {
                    if a.is_empty() {
                        b.to_string()
                    } else {
                        format!("{a}{sep}{b}")
                    }
                };
                next.push(GridConfig {
                    label: join(&cell.label, &value.label, "_"),
                    flags: cell.flags.with(&value.flags),
                    meaning: join(&cell.meaning, &value.meaning, "; "),
                });
            }
        }
        cells = next;
    }
    Ok(cells)
}

/// `90s`, `10m`, `2h`, `1h30m` or a number of seconds.
pub fn parse_duration(text: &str) -> Result<f64> {
    let text = text.trim();
    if let Ok(s) = text.parse::<f64>() {
        return positive(s);
    }
    let mut total = 0.0;
    let mut number = String::new();
    for c in text.chars() {
        match c {
            '0'..='9' | '.' => number.push(c),
            'h' | 'm' | 's' => {
                let v: f64 = number
                    .parse()
                    .context("a number must come before each unit")?;
                total += v * match c {
                    'h' => 3600.0,
                    'm' => 60.0,
                    _ => 1.0,
                };
                number.clear();
            }
            _ => bail!("unexpected `{c}`"),
        }
    }
    if !number.is_empty() {
        bail!("`{number}` has no unit (h, m or s)");
    }
    positive(total)
}

fn positive(s: f64) -> Result<f64> {
    if !(s.is_finite() && s > 0.0) {
        bail!("a duration must be above zero");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Grid> {
        Grid::parse(text, Path::new("experiments/t.toml"))
    }

    const HEAD: &str = "question = \"q\"\nseeds = 2\n[budget]\nepochs = 3\n";

    #[test]
    fn axes_make_a_cross_product_and_cells_are_taken_as_written() -> Result<()> {
        let grid = parse(&format!(
            "{HEAD}[base]\nunits-g = 64\nlr = 0.001\nspectral-norm = true\n\
             [[axis]]\nflag = \"bn\"\nvalues = [\"joint\", \"separate\"]\n\
             [[axis]]\nname = \"x\"\n[[axis.value]]\nlabel = \"m2\"\nflags = {{ margin = 2 }}\nmeaning = \"two\"\n\
             [[axis.value]]\nlabel = \"m5\"\nflags = {{ margin = 5.5 }}\n"
        ));
        // `name` is not a key of an axis: the error names the line.
        let err = format!("{:#}", grid.unwrap_err());
        assert!(
            err.contains("line 13") && err.contains("unknown field `name`"),
            "{err}"
        );

        let grid = parse(&format!(
            "{HEAD}[base]\nunits-g = 64\nlr = 0.001\nspectral-norm = true\n\
             [[axis]]\nflag = \"bn\"\nvalues = [\"joint\", \"separate\"]\n\
             [[axis]]\n[[axis.value]]\nlabel = \"m2\"\nflags = {{ margin = 2 }}\nmeaning = \"two\"\n\
             [[axis.value]]\nlabel = \"m5\"\nflags = {{ margin = 5.5 }}\n"
        ))?;
        assert_eq!(grid.name, "t");
        assert_eq!(grid.budget, Budget::Epochs(3));
        assert_eq!(
            grid.base.args(),
            ["--units-g", "64", "--lr", "0.001", "--spectral-norm"]
        );
        let labels: Vec<&str> = grid.cells.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(
            labels,
            ["joint_m2", "joint_m5", "separate_m2", "separate_m5"]
        );
        assert_eq!(
            grid.cells[1].flags.command_text(),
            "--bn joint --margin 5.5"
        );
        assert_eq!(grid.cells[0].meaning, "--bn joint; two");
        assert_eq!(grid.varied, ["bn", "margin"]);

        let cells = parse(&format!(
            "{HEAD}[[cell]]\nlabel = \"a\"\nflags = {{ bn = \"joint\" }}\n\
             [[cell]]\nlabel = \"b\"\nflags = {{ bn = \"separate\", margin = 3 }}\n"
        ))?;
        assert_eq!(cells.cells.len(), 2);
        assert_eq!(cells.varied, ["bn", "margin"]);
        Ok(())
    }

    #[test]
    fn bad_files_name_the_line_and_the_fix() {
        let cases: &[(&str, &[&str])] = &[
            ("question = \"q\"\nseeds = 2\n", &["budget"]),
            (
                "question = \"q\"\nseeds = 0\n[budget]\nepochs = 1\n[[axis]]\nflag = \"bn\"\nvalues = [\"joint\"]\n",
                &["line 2", "seeds must be at least 1"],
            ),
            (
                "question = \"q\"\nseeds = 1\n[budget]\nepochs = 1\niterations = 5\n[[axis]]\nflag = \"bn\"\nvalues = [\"joint\"]\n",
                &["line 3", "exactly one of"],
            ),
            (
                &format!("{HEAD}[base]\nseed = 4\n[[axis]]\nflag = \"bn\"\nvalues = [\"joint\"]\n"),
                &["line 5", "`seed` is set by the experiment"],
            ),
            (
                &format!("{HEAD}[[axis]]\nflag = \"bn\"\nvalues = [\"joint\", \"joint\"]\n"),
                &["two cells are labelled `joint`"],
            ),
            (
                &format!("{HEAD}[[axis]]\nflag = \"bn\"\nvalues = [\"a\"]\nlabels = [\"x\", \"y\"]\n"),
                &["line 5", "one entry per value"],
            ),
            (
                &format!("{HEAD}[[axis]]\nflag = \"bn\"\n"),
                &["line 5", "either `flag` with `values`"],
            ),
            (
                &format!("{HEAD}[[axis]]\nflag = \"bn\"\nvalues = [\"a b\"]\n"),
                &["label `a b`"],
            ),
            (HEAD, &["no [[axis]] and no [[cell]]"]),
            (
                &format!("{HEAD}[[axis]]\nflag = \"bn\"\nvalues = [\"a\"]\n[[axis]]\nflag = \"bn\"\nvalues = [\"b\"]\n"),
                &["two axes set --bn"],
            ),
            ("question = \"q\"\nseeds = \"x\"\n", &["line 2"]),
        ];
        for (text, needles) in cases {
            let err = format!("{:#}", parse(text).unwrap_err());
            for needle in *needles {
                assert!(
                    err.contains(needle),
                    "`{needle}` missing from: {err}\n---\n{text}"
                );
            }
        }
    }

    #[test]
    fn budgets_and_durations() -> Result<()> {
        let grid = parse("question = \"q\"\nseeds = 1\n[budget]\ntime = \"1h30m\"\n[judge]\nevery = 0.5\nsamples = 1000\nfinal = 10000\n[[axis]]\nflag = \"bn\"\nvalues = [\"joint\"]\n")?;
        assert_eq!(grid.budget, Budget::Time(5400.0));
        assert_eq!(grid.judge.unwrap().final_samples, Some(10000));
        assert_eq!(grid.budget.flags(), ["--time-limit", "5400s"]);
        assert_eq!(Budget::Time(600.0).text(), "10 min");
        assert_eq!(
            grid.shared_flags().command_text(),
            "--eval-every 0.5 --eval-samples 1000"
        );
        assert!(parse_duration("10").is_ok() && parse_duration("5x").is_err());
        Ok(())
    }

    #[test]
    fn the_builtin_experiments_read() -> Result<()> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let names = Grid::builtin_names(&root);
        for expected in ["activation", "bn", "margin", "pt"] {
            assert!(names.contains(&expected.to_string()), "{names:?}");
        }
        for name in names {
            let grid = Grid::load(&Grid::locate(&name, &root)?)?;
            assert_eq!(grid.name, name);
            assert!(grid.cells.len() >= 2, "{name}");
            assert!(!grid.question.is_empty());
        }
        Ok(())
    }
}
