//! Comparisons the fast kernels' tests share.

/// Asserts `|got − want| ≤ tol · max(|want|, scale)` elementwise, where
/// `scale` is the largest |want| (so values near zero are judged against the
/// vector's magnitude rather than their own).
pub fn assert_close(got: &[f32], want: &[f32], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let scale = want
        .iter()
        .fold(0f64, |m, &w| m.max(f64::from(w).abs()))
        .max(1e-30);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - f64::from(w)).abs();
        assert!(
            err <= tol * scale,
            "{what}[{i}]: got {g}, want {w} (error {err:e}, allowed {:e})",
            tol * scale
        );
    }
}
