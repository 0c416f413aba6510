//! The four experiments: which flag each varies, over which values, and the
//! question it answers.

use anyhow::{bail, Result};

use super::flags::Flags;

/// An experiment of `cargo xtask experiment <name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Experiment {
    /// How D batch-normalizes the real and the fake batch.
    Bn,
    /// G's output activation.
    Activation,
    /// The pull-away term's formula (or none).
    Pt,
    /// The EBGAN margin.
    Margin,
}

/// One point of an experiment's grid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridConfig {
    /// Short name: the table row and the run folder's name.
    pub label: String,
    /// What it sets on top of the base configuration.
    pub flags: Flags,
    /// One line on what it means.
    pub meaning: String,
}

impl GridConfig {
    fn new(label: &str, flags: &[(&str, &str)], meaning: &str) -> Self {
        Self {
            label: label.to_string(),
            flags: Flags::from_pairs(flags.iter().copied()),
            meaning: meaning.to_string(),
        }
    }
}

impl Experiment {
    /// Every experiment, in the order the usage lists them.
    pub const ALL: [Experiment; 4] = [
        Experiment::Bn,
        Experiment::Activation,
        Experiment::Pt,
        Experiment::Margin,
    ];

    /// Reads `bn`, `activation`, `pt` or `margin`.
    pub fn parse(name: &str) -> Result<Self> {
        match Self::ALL.into_iter().find(|e| e.name() == name) {
            Some(e) => Ok(e),
            None => bail!("unknown experiment `{name}`; choose one of bn, activation, pt, margin"),
        }
    }

    /// The name on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Experiment::Bn => "bn",
            Experiment::Activation => "activation",
            Experiment::Pt => "pt",
            Experiment::Margin => "margin",
        }
    }

    /// The `kusari train` flags the grid varies; overrides may not set them.
    pub fn varied_flags(self) -> &'static [&'static str] {
        match self {
            Experiment::Bn => &["bn"],
            Experiment::Activation => &["output-activation"],
            Experiment::Pt => &["pt-variant", "pt-weight"],
            Experiment::Margin => &["margin"],
        }
    }

    /// The grid, in table order.
    pub fn configs(self) -> Vec<GridConfig> {
        match self {
            Experiment::Bn => vec![
                GridConfig::new(
                    "joint",
                    &[("bn", "joint")],
                    "(a) real and fake normalized together, as one batch of 2N",
                ),
                GridConfig::new(
                    "separate",
                    &[("bn", "separate")],
                    "(b) each batch normalized by its own statistics (the seed)",
                ),
                GridConfig::new(
                    "real-stats",
                    &[("bn", "real-stats")],
                    "(c) the fake batch normalized with the real batch's statistics",
                ),
            ],
            Experiment::Activation => vec![
                GridConfig::new(
                    "identity",
                    &[("output-activation", "identity")],
                    "no squashing, data in [−1, 1] (the seed)",
                ),
                GridConfig::new(
                    "tanh",
                    &[("output-activation", "tanh")],
                    "tanh, data in [−1, 1]",
                ),
                GridConfig::new(
                    "sigmoid",
                    &[("output-activation", "sigmoid")],
                    "sigmoid, data in [0, 1]",
                ),
            ],
            Experiment::Pt => vec![
                GridConfig::new(
                    "paper",
                    &[("pt-variant", "paper")],
                    "the paper's term: mean cos² over pairs i ≠ j (the seed)",
                ),
                GridConfig::new(
                    "blog",
                    &[("pt-variant", "blog")],
                    "the blog's term: cos² summed with the diagonal, over N²",
                ),
                GridConfig::new(
                    "unsquared",
                    &[("pt-variant", "unsquared")],
                    "mean cos (not squared) over pairs i ≠ j",
                ),
                GridConfig::new("none", &[("pt-weight", "0")], "no pull-away term"),
            ],
            Experiment::Margin => [2, 5, 10, 20]
                .into_iter()
                .map(|m| {
                    let value = m.to_string();
                    let meaning = if m == 10 {
                        "margin 10 (the seed)".to_string()
                    } else {
                        format!("margin {m}")
                    };
                    GridConfig::new(&format!("m{m}"), &[("margin", &value)], &meaning)
                })
                .collect(),
        }
    }

    /// The question the experiment answers, for the document's first section.
    pub fn question(self) -> &'static str {
        match self {
            Experiment::Bn => {
                "How should the discriminator batch-normalize the real and the fake batch: \
                 (a) joint — one batch of both, (b) separate — each batch its own statistics, or \
                 (c) real-stats — the fake batch normalized with the real batch's statistics? \
                 The blog's author had the impression that (c) hurt and that (a) is simple and \
                 stable; nobody measured it."
            }
            Experiment::Activation => {
                "Which output activation should the generator use: identity (the seed's), tanh \
                 or sigmoid? The blog's author asked this without measuring it."
            }
            Experiment::Pt => {
                "Which pull-away term helps most: the paper's, the blog's (diagonal kept), an \
                 unsquared cosine, or none at all?"
            }
            Experiment::Margin => {
                "How does the EBGAN margin m (the seed uses 10) change sample quality?"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grid_varies_only_its_own_flags() {
        for experiment in Experiment::ALL {
            assert_eq!(Experiment::parse(experiment.name()).unwrap(), experiment);
            let configs = experiment.configs();
            assert!(configs.len() >= 3, "{}", experiment.name());
            let mut labels: Vec<_> = configs.iter().map(|c| c.label.clone()).collect();
            labels.sort();
            labels.dedup();
            assert_eq!(labels.len(), configs.len(), "labels are unique");
            for config in &configs {
                assert!(config
                    .label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-'));
                for flag in config.flags.iter() {
                    assert!(
                        experiment.varied_flags().contains(&flag.name.as_str()),
                        "{} sets --{}",
                        experiment.name(),
                        flag.name
                    );
                }
            }
        }
        assert!(Experiment::parse("dropout").is_err());
    }

    #[test]
    fn the_grids_are_the_issues() {
        let values = |e: Experiment, flag: &str| -> Vec<String> {
            e.configs()
                .iter()
                .filter_map(|c| c.flags.get(flag).map(str::to_string))
                .collect()
        };
        assert_eq!(
            values(Experiment::Bn, "bn"),
            ["joint", "separate", "real-stats"]
        );
        assert_eq!(
            values(Experiment::Activation, "output-activation"),
            ["identity", "tanh", "sigmoid"]
        );
        assert_eq!(
            values(Experiment::Pt, "pt-variant"),
            ["paper", "blog", "unsquared"]
        );
        assert_eq!(values(Experiment::Pt, "pt-weight"), ["0"]);
        assert_eq!(values(Experiment::Margin, "margin"), ["2", "5", "10", "20"]);
    }
}
