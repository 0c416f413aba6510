use gemm::{gemm, Parallelism};
use rayon::prelude::*;
use std::time::Instant;

/// C[m×n] (row-major, ldc) (+)= A·B with general strides.
#[allow(clippy::too_many_arguments)]
unsafe fn mm(
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    ldc: usize,
    acc: bool,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
    b_cs: isize,
    par: Parallelism,
) {
    gemm(
        m,
        n,
        k,
        c,
        1,
        ldc as isize,
        acc,
        a,
        a_cs,
        a_rs,
        b,
        b_cs,
        b_rs,
        1.0,
        1.0,
        false,
        false,
        false,
        par,
    );
}

fn time(name: &str, flops: f64, reps: usize, mut f: impl FnMut()) {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    let s = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "{name:50} {:8.2} ms {:6.1} GFLOP/s",
        s * 1e3,
        flops / s / 1e9
    );
}

struct P(*mut f32);
unsafe impl Send for P {}
unsafe impl Sync for P {}

fn main() {
    let (rows, n) = (100usize, 3200usize);
    let x: Vec<f32> = (0..rows * n).map(|i| (i % 13) as f32 * 0.1).collect();
    let w: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.01).collect();
    let mut y = vec![0f32; rows * n];
    let mut dw = vec![0f32; n * n];
    let fl = 2.0 * (rows * n * n) as f64;
    let reps = 5;
    time("fwd Rayon(2)", fl, reps, || unsafe {
        mm(
            rows,
            n,
            n,
            y.as_mut_ptr(),
            n,
            false,
            x.as_ptr(),
            n as isize,
            1,
            w.as_ptr(),
            n as isize,
            1,
            Parallelism::Rayon(2),
        )
    });
    time("fwd None 1 thread", fl, 2, || unsafe {
        mm(
            rows,
            n,
            n,
            y.as_mut_ptr(),
            n,
            false,
            x.as_ptr(),
            n as isize,
            1,
            w.as_ptr(),
            n as isize,
            1,
            Parallelism::None,
        )
    });
    for bs in [128usize, 256, 512, 1600] {
        let yp = P(y.as_mut_ptr());
        time(&format!("fwd col blocks {bs} par"), fl, reps, || {
            let yp = &yp;
            (0..n.div_ceil(bs)).into_par_iter().for_each(|b| unsafe {
                let j0 = b * bs;
                let nb = bs.min(n - j0);
                mm(
                    rows,
                    nb,
                    n,
                    yp.0.add(j0),
                    n,
                    false,
                    x.as_ptr(),
                    n as isize,
                    1,
                    w.as_ptr().add(j0),
                    n as isize,
                    1,
                    Parallelism::None,
                )
            })
        });
    }
    // input grad: dX = dY · W^T  (W^T: b_rs = 1, b_cs = n)
    time("igrad Rayon(2)", fl, reps, || unsafe {
        mm(
            rows,
            n,
            n,
            y.as_mut_ptr(),
            n,
            false,
            x.as_ptr(),
            n as isize,
            1,
            w.as_ptr(),
            1,
            n as isize,
            Parallelism::Rayon(2),
        )
    });
    // weight grad dW = X^T dY: a = X^T (a_rs = 1, a_cs = n)
    time("wgrad Rayon(2) reused", fl, reps, || unsafe {
        mm(
            n,
            n,
            rows,
            dw.as_mut_ptr(),
            n,
            false,
            x.as_ptr(),
            1,
            n as isize,
            y.as_ptr(),
            n as isize,
            1,
            Parallelism::Rayon(2),
        )
    });
    time("wgrad Rayon(2) fresh", fl, reps, || unsafe {
        let mut d = vec![0f32; n * n];
        mm(
            n,
            n,
            rows,
            d.as_mut_ptr(),
            n,
            false,
            x.as_ptr(),
            1,
            n as isize,
            y.as_ptr(),
            n as isize,
            1,
            Parallelism::Rayon(2),
        );
        std::hint::black_box(&d);
    });
    for bs in [64usize, 128, 256, 512] {
        let dp = P(dw.as_mut_ptr());
        time(
            &format!("wgrad row blocks {bs} (full width) par"),
            fl,
            reps,
            || {
                let dp = &dp;
                (0..n.div_ceil(bs)).into_par_iter().for_each(|b| unsafe {
                    let i0 = b * bs;
                    let mb = bs.min(n - i0);
                    mm(
                        mb,
                        n,
                        rows,
                        dp.0.add(i0 * n),
                        n,
                        false,
                        x.as_ptr().add(i0),
                        1,
                        n as isize,
                        y.as_ptr(),
                        n as isize,
                        1,
                        Parallelism::None,
                    )
                })
            },
        );
        time(&format!("wgrad tiles {bs}x{bs} par"), fl, reps, || {
            let dp = &dp;
            let nb = n.div_ceil(bs);
            (0..nb * nb).into_par_iter().for_each(|t| unsafe {
                let (bi, bj) = (t / nb, t % nb);
                let (i0, j0) = (bi * bs, bj * bs);
                let (mb, nbb) = (bs.min(n - i0), bs.min(n - j0));
                mm(
                    mb,
                    nbb,
                    rows,
                    dp.0.add(i0 * n + j0),
                    n,
                    false,
                    x.as_ptr().add(i0),
                    1,
                    n as isize,
                    y.as_ptr().add(j0),
                    n as isize,
                    1,
                    Parallelism::None,
                )
            })
        });
    }
    // small config shapes: 100x400x400
    let s = 400;
    let fl_s = 2.0 * (rows * s * s) as f64;
    time("small fwd 100x400x400 None", fl_s, 50, || unsafe {
        mm(
            rows,
            s,
            s,
            y.as_mut_ptr(),
            s,
            false,
            x.as_ptr(),
            s as isize,
            1,
            w.as_ptr(),
            s as isize,
            1,
            Parallelism::None,
        )
    });
    time("small fwd 100x400x400 Rayon(2)", fl_s, 50, || unsafe {
        mm(
            rows,
            s,
            s,
            y.as_mut_ptr(),
            s,
            false,
            x.as_ptr(),
            s as isize,
            1,
            w.as_ptr(),
            s as isize,
            1,
            Parallelism::Rayon(2),
        )
    });
    time("small wgrad 400x400x100 None", fl_s, 50, || unsafe {
        mm(
            s,
            s,
            rows,
            dw.as_mut_ptr(),
            s,
            false,
            x.as_ptr(),
            1,
            s as isize,
            y.as_ptr(),
            s as isize,
            1,
            Parallelism::None,
        )
    });
    time(
        "small d 200x128x128 None",
        2.0 * 200.0 * 128.0 * 128.0,
        200,
        || unsafe {
            mm(
                200,
                128,
                128,
                y.as_mut_ptr(),
                128,
                false,
                x.as_ptr(),
                128,
                1,
                w.as_ptr(),
                128,
                1,
                Parallelism::None,
            )
        },
    );
}
