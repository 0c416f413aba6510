//! Ready-made extensions: logging, progress, snapshots, plots, non-finite checks.
