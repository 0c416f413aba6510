//! Fetching the MNIST `.gz` files into the default folder `data/mnist`
//! (feature `download`): each file from the first mirror that serves it
//! intact, checked against the MD5 of its uncompressed content, and written
//! atomically so that an interrupted download leaves nothing behind.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use md5::{Digest, Md5};

use super::idx;
use super::mnist::{MnistFile, MIRRORS};

/// Environment variable overriding the mirror list: base URLs separated by
/// commas or spaces, each followed by the file name (`…/train-images-idx3-ubyte.gz`).
pub const MIRROR_ENV: &str = "KUSARI_MNIST_MIRROR";

/// Largest download accepted; the biggest MNIST file is about 10 MB.
const MAX_BYTES: u64 = 64 << 20;

/// The mirrors to try: from `KUSARI_MNIST_MIRROR` if set, else [`MIRRORS`].
pub fn mirrors_from_env() -> Result<Vec<String>> {
    match std::env::var_os(MIRROR_ENV) {
        None => Ok(parse_mirrors(None)),
        Some(value) => {
            let value = value
                .into_string()
                .map_err(|v| anyhow!("{MIRROR_ENV}={v:?} is not valid UTF-8"))?;
            Ok(parse_mirrors(Some(&value)))
        }
    }
}

/// Base URLs from a `KUSARI_MNIST_MIRROR` value (unset or blank: the
/// standard [`MIRRORS`]), each ending in `/`.
pub fn parse_mirrors(value: Option<&str>) -> Vec<String> {
    let listed: Vec<String> = value
        .unwrap_or("")
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.ends_with('/') {
                s.to_string()
            } else {
                format!("{s}/")
            }
        })
        .collect();
    if listed.is_empty() {
        MIRRORS.iter().map(|s| s.to_string()).collect()
    } else {
        listed
    }
}

/// Downloads `{name}.gz` of each of `files` into `dir` (created if needed),
/// trying `mirrors` in order, and checks each against its MD5. Stops at the
/// first file no mirror could deliver, with an error that lists what to
/// fetch by hand, from where, and where to put it.
pub fn download(dir: &Path, files: &[MnistFile], mirrors: &[String]) -> Result<()> {
    if mirrors.is_empty() {
        bail!("no MNIST mirror to download from; set {MIRROR_ENV} or unset it to use the standard ones");
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build()
        .into();
    for (i, file) in files.iter().enumerate() {
        let target = dir.join(format!("{}.gz", file.name));
        let mut failures = Vec::new();
        let mut done = false;
        for mirror in mirrors {
            let url = format!("{mirror}{}.gz", file.name);
            tracing::info!("downloading {url}");
            match fetch(&agent, &url).and_then(|gz| verify(&gz, file).map(|()| gz)) {
                Ok(gz) => {
                    std::fs::create_dir_all(dir).with_context(|| {
                        format!("cannot create the MNIST folder {}", dir.display())
                    })?;
                    crate::fsutil::write_atomic(&target, &gz)?;
                    tracing::info!("saved {}", target.display());
                    done = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!("{url}: {e:#}");
                    failures.push(format!("  {url}: {e:#}"));
                }
            }
        }
        if !done {
            return Err(manual_instructions(dir, &files[i..], mirrors, &failures));
        }
    }
    Ok(())
}

/// The error for a failed download: what went wrong, then how to do it by hand.
fn manual_instructions(
    dir: &Path,
    left: &[MnistFile],
    mirrors: &[String],
    failures: &[String],
) -> anyhow::Error {
    let shown_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    anyhow!(
        "could not download MNIST (offline?):\n{}\n\
         Fetch {} yourself from {} and put {} in {}, \
         or point kusari at a folder that has them with --data-dir DIR or MNIST_DIR=DIR.",
        failures.join("\n"),
        left.iter()
            .map(|f| format!("{}.gz", f.name))
            .collect::<Vec<_>>()
            .join(", "),
        mirrors.join(" or "),
        if left.len() == 1 { "it" } else { "them" },
        shown_dir.display()
    )
}

/// The body of `url`, with a progress bar on a terminal.
fn fetch(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>> {
    let response = agent.get(url).call()?;
    let (_, body) = response.into_parts();
    let total = body.content_length();
    let bar = match total {
        Some(len) => indicatif::ProgressBar::new(len),
        None => indicatif::ProgressBar::new_spinner(),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
    let mut reader = body.into_with_config().limit(MAX_BYTES).reader();
    let mut bytes = Vec::with_capacity(total.unwrap_or(0).min(MAX_BYTES) as usize);
    let mut chunk = vec![0u8; 1 << 16];
    let result = loop {
        match reader.read(&mut chunk) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                bytes.extend_from_slice(&chunk[..n]);
                bar.inc(n as u64);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    bar.finish_and_clear();
    result?;
    if let Some(len) = total {
        if bytes.len() as u64 != len {
            bail!("the download ended after {} of {len} bytes", bytes.len());
        }
    }
    Ok(bytes)
}

/// Checks that `gz` decompresses to content with the MD5 of `file`.
fn verify(gz: &[u8], file: &MnistFile) -> Result<()> {
    let raw = idx::gunzip(gz).context("the download is not a complete gzip file")?;
    let actual = md5_hex(&raw);
    if actual != file.md5 {
        bail!(
            "checksum mismatch: MD5 of the uncompressed {} is {actual}, expected {}",
            file.name,
            file.md5
        );
    }
    Ok(())
}

/// MD5 of `bytes` in lowercase hex.
pub fn md5_hex(bytes: &[u8]) -> String {
    format!("{:x}", Md5::digest(bytes))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::thread::JoinHandle;
    use std::time::Instant;

    use super::*;
    use crate::datasets::mnist::{
        self, load, load_or_download_from, Mnist, MnistSource, Split, FILES,
    };

    /// A one-request-per-connection HTTP server on 127.0.0.1 serving
    /// `files` by path; it stops when asked or after 30 s.
    struct Server {
        base: String,
        stop: Arc<AtomicBool>,
        handle: JoinHandle<Vec<String>>,
    }

    impl Server {
        fn start(files: HashMap<String, Vec<u8>>) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let base = format!("http://{}/mnist/", listener.local_addr().unwrap());
            let stop = Arc::new(AtomicBool::new(false));
            let stop_flag = stop.clone();
            let handle = std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut requested = Vec::new();
                while !stop_flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if let Some(path) = respond(stream, &files) {
                                requested.push(path);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                requested
            });
            Server { base, stop, handle }
        }

        /// Stops the server and returns the paths it was asked for.
        fn finish(self) -> Vec<String> {
            self.stop.store(true, Ordering::SeqCst);
            self.handle.join().unwrap()
        }
    }

    fn respond(mut stream: TcpStream, files: &HashMap<String, Vec<u8>>) -> Option<String> {
        stream.set_nonblocking(false).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).ok()?;
            if n == 0 {
                return None;
            }
            request.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&request)
            .lines()
            .next()?
            .to_string();
        let path = line.split_whitespace().nth(1)?.to_string();
        let (status, body) = match files.get(&path) {
            Some(body) => ("200 OK", body.as_slice()),
            None => ("404 Not Found", &b"not here"[..]),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).ok()?;
        stream.write_all(body).ok()?;
        Some(path)
    }

    /// Small synthetic MNIST, as `.gz` files by URL path, and its file list
    /// with matching MD5s.
    fn synthetic_site(seed: u8) -> (Mnist, Mnist, HashMap<String, Vec<u8>>, Vec<MnistFile>) {
        let make = |n: usize| {
            let images = (0..n * 784).map(|i| (i as u8).wrapping_mul(seed)).collect();
            let labels = (0..n).map(|i| (i * seed as usize % 10) as u8).collect();
            Mnist::from_raw(images, labels).unwrap()
        };
        let (train, test) = (make(6), make(3));
        let staging = tempfile::tempdir().unwrap();
        train.save(staging.path(), Split::Train).unwrap();
        test.save(staging.path(), Split::Test).unwrap();
        let mut site = HashMap::new();
        let mut files = Vec::new();
        for f in FILES {
            let gz = std::fs::read(staging.path().join(format!("{}.gz", f.name))).unwrap();
            let md5: &'static str = Box::leak(md5_hex(&idx::gunzip(&gz).unwrap()).into_boxed_str());
            files.push(MnistFile { name: f.name, md5 });
            site.insert(format!("/mnist/{}.gz", f.name), gz);
        }
        (train, test, site, files)
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// A URL on 127.0.0.1 where nothing listens.
    fn unreachable_base() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}/mnist/")
    }

    #[test]
    fn downloads_from_a_local_mirror() -> Result<()> {
        let (train, test, site, files) = synthetic_site(3);
        let server = Server::start(site);
        let dir = tempfile::tempdir()?;
        let target = dir.path().join("data").join("mnist");
        download(&target, &files, std::slice::from_ref(&server.base))?;
        let requested = server.finish();
        assert_eq!(requested.len(), 4, "{requested:?}");
        assert_eq!(load(&target, Split::Train)?, train);
        assert_eq!(load(&target, Split::Test)?, test);
        assert_eq!(names_in(&target).len(), 4, "{:?}", names_in(&target));
        Ok(())
    }

    #[test]
    fn bad_checksum_is_rejected_and_the_next_mirror_tried() -> Result<()> {
        let (_, _, good_site, files) = synthetic_site(3);
        let (_, _, bad_site, _) = synthetic_site(5);
        let bad = Server::start(bad_site);
        let dir = tempfile::tempdir()?;

        let err = format!(
            "{:#}",
            download(dir.path(), &files, std::slice::from_ref(&bad.base)).unwrap_err()
        );
        assert!(err.contains("checksum mismatch"), "{err}");
        assert!(err.contains(&format!("expected {}", files[0].md5)), "{err}");
        assert!(
            err.contains("train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz"),
            "{err}"
        );
        assert!(
            names_in(dir.path()).is_empty(),
            "{:?}",
            names_in(dir.path())
        );

        let good = Server::start(good_site);
        download(dir.path(), &files, &[bad.base.clone(), good.base.clone()])?;
        assert_eq!(
            bad.finish().len(),
            5,
            "one failed try in the first call, then one per file"
        );
        assert_eq!(good.finish().len(), 4);
        assert_eq!(names_in(dir.path()).len(), 4, "{:?}", names_in(dir.path()));
        Ok(())
    }

    #[test]
    fn unreachable_or_missing_mirror_says_what_to_fetch_by_hand() -> Result<()> {
        let (_, _, _, files) = synthetic_site(3);
        let dir = tempfile::tempdir()?;
        let target = dir.path().join("mnist");
        let base = unreachable_base();
        let err = format!(
            "{:#}",
            download(&target, &files, std::slice::from_ref(&base)).unwrap_err()
        );
        assert!(
            err.contains(&format!("{base}train-images-idx3-ubyte.gz:")),
            "{err}"
        );
        for f in FILES {
            assert!(err.contains(&format!("{}.gz", f.name)), "{err}");
        }
        assert!(err.contains(&target.display().to_string()), "{err}");
        assert!(err.contains("--data-dir"), "{err}");
        assert!(!target.exists());

        let empty = Server::start(HashMap::new());
        let err = format!(
            "{:#}",
            download(&target, &files, std::slice::from_ref(&empty.base)).unwrap_err()
        );
        assert!(err.contains("404"), "{err}");
        assert_eq!(empty.finish().len(), 1);
        Ok(())
    }

    #[test]
    fn only_the_default_folder_is_downloaded_into() -> Result<()> {
        let (train, _, site, _) = synthetic_site(3);
        let server = Server::start(site);
        let dir = tempfile::tempdir()?;
        let mirrors = [server.base.clone()];

        // A folder given explicitly is never filled.
        let explicit = MnistSource::Explicit(dir.path().join("explicit"));
        let err = format!(
            "{:#}",
            load_or_download_from(&explicit, Split::Train, &mirrors).unwrap_err()
        );
        assert!(err.contains("given by --data-dir"), "{err}");

        // The default folder is, and the real checksums apply: synthetic files fail them.
        let default = MnistSource::Default(dir.path().join("default"));
        let err = format!(
            "{:#}",
            load_or_download_from(&default, Split::Train, &mirrors).unwrap_err()
        );
        assert!(err.contains("checksum mismatch"), "{err}");
        assert_eq!(
            server.finish().len(),
            1,
            "one try of the first missing file"
        );

        // Files already there are read without any download.
        train.save(default.path(), Split::Train)?;
        mnist::Mnist::from_raw(vec![], vec![])?.save(default.path(), Split::Test)?;
        let nothing = [unreachable_base()];
        assert_eq!(
            load_or_download_from(&default, Split::Train, &nothing)?,
            train
        );
        Ok(())
    }

    #[test]
    fn mirror_list_parsing() {
        assert_eq!(parse_mirrors(None), MIRRORS.map(String::from).to_vec());
        assert_eq!(
            parse_mirrors(Some("  ")),
            MIRRORS.map(String::from).to_vec()
        );
        assert_eq!(
            parse_mirrors(Some("http://a/x, http://b/y/")),
            vec!["http://a/x/".to_string(), "http://b/y/".to_string()]
        );
    }

    /// The MD5 constants match real MNIST, when `MNIST_DIR` points at it.
    #[test]
    fn checksums_match_real_mnist_when_available() -> Result<()> {
        let Some(dir) = std::env::var_os("MNIST_DIR").filter(|v| !v.is_empty()) else {
            eprintln!("skipped: MNIST_DIR is not set");
            return Ok(());
        };
        let dir = PathBuf::from(dir);
        for f in FILES {
            let path = mnist::find_file(&dir, f.name)
                .with_context(|| format!("MNIST_DIR={} lacks {}", dir.display(), f.name))?;
            let raw = idx::read_maybe_gz(&path)?;
            assert_eq!(md5_hex(&raw), f.md5, "{}", path.display());
            if path.extension().is_some_and(|e| e == "gz") {
                verify(&std::fs::read(&path)?, &f)?;
            }
        }
        Ok(())
    }
}
