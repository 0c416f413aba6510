//! Training on a folder of one's own images (no MNIST needed).

mod common;

use common::*;

/// Draws 20 small RGB PNGs of colored discs on gradients, in nested folders.
fn draw_images(dir: &std::path::Path) {
    for i in 0..20u32 {
        let sub = dir.join(if i % 2 == 0 { "even" } else { "odd/deeper" });
        std::fs::create_dir_all(&sub).unwrap();
        let img = image::RgbImage::from_fn(40, 32, |x, y| {
            let (cx, cy) = (10 + i, 16);
            let inside = (x as i32 - cx as i32).pow(2) + (y as i32 - cy).pow(2) < 64;
            if inside {
                image::Rgb([255, (i * 12) as u8, 40])
            } else {
                image::Rgb([(x * 6) as u8, (y * 7) as u8, 128])
            }
        });
        img.save(sub.join(format!("img{i}.png"))).unwrap();
    }
}

#[test]
fn a_folder_of_pngs_trains_with_conv_nets() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    draw_images(&images);
    let out = dir.path().join("out");
    let output = run(&[
        "train",
        "ebgan",
        "--arch",
        "conv",
        "--dataset",
        "folder",
        "--data-dir",
        images.to_str().unwrap(),
        "--image-size",
        "16",
        "--batch-size",
        "5",
        "--iterations",
        "6",
        "--units-g",
        "8",
        "--units-d",
        "8",
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let log = read_log(&out);
    let last = log.last().expect("a log entry");
    assert_eq!(last["iteration"].as_u64(), Some(6));
    assert!(
        last["dis/loss"].as_f64().is_some_and(f64::is_finite),
        "{last:?}"
    );
    // 20 images of 16×16, batch 5: four iterations make an epoch.
    assert_eq!(
        png_size(&out.join("generated_epoch1.png")),
        (10 * 17 - 1, 10 * 17 - 1)
    );
    assert!(
        out.join("snapshot_iter_6").exists(),
        "the completed run ends with a snapshot"
    );

    let npy = dir.path().join("s.npy");
    let output = run(&[
        "sample",
        "--snapshot",
        out.join("snapshot_iter_6").to_str().unwrap(),
        "--n",
        "3",
        "--out",
        npy.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(read_npy_u8(&npy).0, vec![3, 16, 16, 3]);
}
