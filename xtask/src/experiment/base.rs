//! The configuration every experiment shares: everything but the flag it
//! varies. Retune it here (and only here) when training gets faster.

use super::flags::Flags;

/// `kusari train ebgan` flags of every run (the varied flag is set on top).
///
/// An EBGAN-PT MLP, the seed's recipe at a sixth of G's width and a quarter
/// of D's (G 512, D 256 instead of 3200/1024) so that the whole `bn` grid —
/// 3 configs × 3 seeds — trains and is judged in under an hour on a 2-core
/// CPU. Every epoch is judged with 10,000 samples, the same count as the
/// final evaluation, so the FID curve and the final FID are on one scale.
///
/// Measured on the 2-core development machine (AMD EPYC Zen 3, shared with
/// builds): the fast MLP step trains an epoch of 600 iterations in ≈ 23 s at
/// 512/256; a judgement of 10,000 samples takes ≈ 7 s.
pub const BASE_FLAGS: &[(&str, &str)] = &[
    ("preset", "seed"),
    ("arch", "mlp"),
    ("units-g", "512"),
    ("units-d", "256"),
    ("z-dim", "3"),
    ("batch-size", "100"),
    ("lr", "0.001"),
    ("beta1", "0.5"),
    ("margin", "10"),
    ("pt-variant", "paper"),
    ("pt-weight", "0.1"),
    ("bn", "separate"),
    ("output-activation", "identity"),
    ("eval-every", "1"),
    ("eval-samples", "10000"),
    ("log-every", "1"),
    ("snapshot-every", "1"),
    ("keep-snapshots", "1"),
];

/// Training epochs of every run. With [`BASE_FLAGS`] at ≈ 23 s an epoch plus
/// ≈ 7 s a judgement, a run takes ≈ 2.5 min and a 3-config grid ≈ 25 min.
pub const BASE_EPOCHS: u32 = 5;

/// Flags the experiment sets itself, per run or from its own options; the
/// `--` overrides may not touch them.
pub const MANAGED_FLAGS: &[&str] = &[
    "out",
    "resume",
    "seed",
    "epochs",
    "iterations",
    "time-limit",
    "dataset",
    "data-dir",
    "log-every",
];

/// The base flags as a [`Flags`] list.
pub fn base_flags() -> Flags {
    Flags::from_pairs(BASE_FLAGS.iter().copied())
}
