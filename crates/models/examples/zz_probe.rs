use gemm::{gemm, Parallelism};
fn cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}
#[allow(clippy::too_many_arguments)]
unsafe fn mm(m: usize, n: usize, k: usize, c: *mut f32, ldc: usize, acc: bool,
             a: *const f32, a_rs: isize, a_cs: isize, b: *const f32, b_rs: isize, b_cs: isize) {
    gemm(m, n, k, c, 1, ldc as isize, acc, a, a_cs, a_rs, b, b_cs, b_rs, 1.0, 1.0, false, false, false, Parallelism::None);
}
fn time(name: &str, flops: f64, mut f: impl FnMut()) {
    f();
    let c0 = cpu();
    let mut reps = 0;
    while cpu() - c0 < 1.0 { f(); reps += 1; }
    let s = (cpu() - c0) / reps as f64;
    println!("{name:45} {:8.3} ms cpu {:6.1} GFLOP/cpu-s", s * 1e3, flops / s / 1e9);
}

fn adam_plain(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let (lr, eps, one_b1, one_b2) = (1e-3f32, 1e-8f32, 0.5f32, 0.001f32);
    for i in 0..p.len() {
        let gi = g[i];
        let mi = m[i] + one_b1 * (gi - m[i]);
        let vi = v[i] + one_b2 * (gi * gi - v[i]);
        m[i] = mi; v[i] = vi;
        p[i] -= lr * mi / (vi.sqrt() + eps);
    }
}
#[target_feature(enable = "avx2,fma")]
unsafe fn adam_avx(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) { adam_plain(p, g, m, v) }
fn main() {
    let nn = 1 << 22;
    let mut p = vec![0.1f32; nn]; let g = vec![0.01f32; nn]; let mut m = vec![0f32; nn]; let mut v = vec![0f32; nn];
    time("adam plain 4M (memory)", 0.0, || { adam_plain(&mut p, &g, &mut m, &mut v) });
    time("adam avx 4M (memory)", 0.0, || unsafe { adam_avx(&mut p, &g, &mut m, &mut v) });
    let k = 16384;
    time("adam plain 16k x256 (cache)", 0.0, || { for _ in 0..256 { adam_plain(&mut p[..k], &g[..k], &mut m[..k], &mut v[..k]) } });
    time("adam avx 16k x256 (cache)", 0.0, || unsafe { for _ in 0..256 { adam_avx(&mut p[..k], &g[..k], &mut m[..k], &mut v[..k]) } });
    let x: Vec<f32> = (0..100 * 3200).map(|i| (i % 13) as f32 * 0.1).collect();
    let w: Vec<f32> = (0..3200 * 3200).map(|i| (i % 7) as f32 * 0.01).collect();
    let mut y = vec![0f32; 100 * 3200];
    let n = 3200usize;
    for nb in [128usize, 192, 256, 320, 384, 400, 512, 640, 800, 1024, 1600] {
        time(&format!("fwd 100x3200 . 3200x{nb}"), 2.0 * 100.0 * 3200.0 * nb as f64, || unsafe {
            mm(100, nb, 3200, y.as_mut_ptr(), n, false, x.as_ptr(), n as isize, 1, w.as_ptr(), n as isize, 1) });
    }
}
