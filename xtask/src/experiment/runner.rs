//! Running `kusari train` (one or several at a time), so that stopping the
//! experiment stops the runs gracefully:
//!
//! - Ctrl-C (or SIGTERM) of the experiment is passed to kusari once per
//!   signal (kusari runs in its own process group, so the terminal's Ctrl-C
//!   does not reach it twice): kusari writes a snapshot and exits, and the
//!   experiment stops after it. A second Ctrl-C makes kusari quit at once.
//! - If the experiment is killed outright, Linux sends kusari SIGTERM (its
//!   parent-death signal), which kusari handles like Ctrl-C.
//! - kusari's stderr goes to `<run>/kusari.stderr` and is echoed from there,
//!   so kusari never writes into a closed pipe when the experiment is gone.
//! - A lock on `<runs-dir>/.lock`, inherited by kusari, keeps a second
//!   experiment (or a rerun while a killed one's kusari is still saving) out.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// kusari's stderr inside a run folder (appended to by every attempt).
pub const STDERR_FILE: &str = "kusari.stderr";

/// What kusari says when FailOnNonNumber stops a run.
const DIVERGED_MARKER: &str = "training has diverged";

/// `kusari train`'s exit status when a signal stopped it after a snapshot
/// (docs/reliability.md).
pub const KUSARI_STOPPED: i32 = 75;

/// Ctrl-C / SIGTERM received by the experiment.
static SIGNALS: AtomicUsize = AtomicUsize::new(0);
/// The running kusaris' process ids.
static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn children() -> Vec<i32> {
    CHILDREN.lock().map(|c| c.clone()).unwrap_or_default()
}

/// Installs the experiment's Ctrl-C / SIGTERM handler: the first signal
/// asks the running kusaris to stop (and the experiment to stop after
/// them); with no kusari running, a second signal exits at once.
pub fn install_signal_handler() -> Result<()> {
    ctrlc::set_handler(|| {
        let previous = SIGNALS.fetch_add(1, Ordering::SeqCst);
        let running = children();
        if !running.is_empty() {
            if previous == 0 {
                eprintln!("\nxtask: stopping the current runs (each writes a snapshot; rerun the command to resume)");
            }
            // SIGTERM first: kusari stops gracefully and ignores a repeat
            // (a scheduler may signal it directly as well); a second
            // Ctrl-C sends SIGINT, which makes kusari quit at once.
            let signal = if previous == 0 {
                Signal::Term
            } else {
                Signal::Int
            };
            for child in running {
                send(child, signal);
            }
        } else if previous == 0 {
            eprintln!("\nxtask: stopping before the next run");
        } else {
            std::process::exit(130);
        }
    })
    .context("installing the Ctrl-C handler")
}

/// Whether the experiment was asked to stop.
pub fn stop_requested() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}

/// The signals the experiment passes on to kusari.
#[derive(Debug, Clone, Copy)]
enum Signal {
    Term,
    Int,
}

#[cfg(unix)]
fn send(pid: i32, signal: Signal) {
    let signal = match signal {
        Signal::Term => libc::SIGTERM,
        Signal::Int => libc::SIGINT,
    };
    // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
    unsafe {
        libc::kill(pid, signal);
    }
}

#[cfg(not(unix))]
fn send(_pid: i32, _signal: Signal) {}

/// How runs share the machine when several train at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Share {
    /// Echo kusari's stderr (only when one run trains at a time).
    pub echo: bool,
    /// `RAYON_NUM_THREADS` of each run: its share of the cores.
    pub threads: Option<usize>,
}

impl Share {
    /// `jobs` runs at a time on this machine's cores.
    pub fn of(jobs: u32) -> Self {
        if jobs <= 1 {
            return Self {
                echo: true,
                threads: None,
            };
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            echo: false,
            threads: Some((cores / jobs as usize).max(1)),
        }
    }
}

/// How a kusari run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Exit status 0 (`completed`: the run reached its budget) or
    /// [`KUSARI_STOPPED`] (stopped by a signal, with a snapshot).
    Exited { completed: bool },
    /// kusari stopped the run because a value became NaN or infinite.
    Diverged(String),
    /// Any other failure: the exit status and the last lines of stderr.
    Failed { status: String, tail: String },
}

/// The held lock on a runs folder; released when dropped (or when the
/// process and the kusari it started have both exited).
pub struct RunsLock {
    file: File,
}

impl RunsLock {
    /// Locks `<runs_dir>/.lock`, waiting (with a message) while another
    /// process holds it.
    pub fn acquire(runs_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(runs_dir)
            .with_context(|| format!("cannot create the runs folder {}", runs_dir.display()))?;
        let path = runs_dir.join(".lock");
        let file = File::create(&path)
            .with_context(|| format!("cannot create the lock file {}", path.display()))?;
        lock(&file, &path)?;
        Ok(Self { file })
    }

    #[cfg(unix)]
    fn raw_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.file.as_raw_fd()
    }
}

#[cfg(unix)]
fn lock(file: &File, path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: flock(2) on a descriptor we own.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(());
    }
    eprintln!(
        "xtask: {} is locked by another process (a running experiment, or the last run of a \
         stopped one still saving its snapshot); waiting…",
        path.display()
    );
    // SAFETY: as above, blocking.
    if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot lock {}", path.display()));
    }
    Ok(())
}

#[cfg(not(unix))]
fn lock(_file: &File, _path: &Path) -> Result<()> {
    Ok(())
}

/// Runs `binary args…` for the run in `run_dir`: stdout is shared, stderr
/// is appended to `run_dir/kusari.stderr` and echoed. Returns how it ended
/// and its wall time.
pub fn run_kusari(
    binary: &Path,
    args: &[String],
    run_dir: &Path,
    lock: Option<&RunsLock>,
    share: &Share,
) -> Result<(Outcome, Duration)> {
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("cannot create the run folder {}", run_dir.display()))?;
    let stderr_path = run_dir.join(STDERR_FILE);
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&stderr_path)
        .with_context(|| format!("cannot open {}", stderr_path.display()))?;
    let start_offset = stderr.metadata().map(|m| m.len()).unwrap_or(0);

    let mut command = Command::new(binary);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::from(stderr));
    prepare_child(&mut command, lock);
    if let Some(threads) = share.threads {
        command.env("RAYON_NUM_THREADS", threads.to_string());
    }

    let start = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let pid = child.id() as i32;
    if let Ok(mut running) = CHILDREN.lock() {
        running.push(pid);
    }
    if stop_requested() {
        // The signal came between the check before this run and the spawn.
        send(pid, Signal::Term);
    }
    let done = Arc::new(AtomicBool::new(false));
    let echo = share
        .echo
        .then(|| spawn_echo(stderr_path.clone(), start_offset, done.clone()));
    let status = child.wait();
    if let Ok(mut running) = CHILDREN.lock() {
        running.retain(|&p| p != pid);
    }
    let elapsed = start.elapsed();
    done.store(true, Ordering::SeqCst);
    if let Some(echo) = echo {
        let _ = echo.join();
    }
    let status = status.with_context(|| format!("waiting for {}", binary.display()))?;

    if status.success() || status.code() == Some(KUSARI_STOPPED) {
        let completed = status.success();
        return Ok((Outcome::Exited { completed }, elapsed));
    }
    let output = read_from(&stderr_path, start_offset).unwrap_or_default();
    if let Some(line) = output.lines().find(|l| l.contains(DIVERGED_MARKER)) {
        let message = line.trim().trim_start_matches("error:").trim().to_string();
        return Ok((Outcome::Diverged(message), elapsed));
    }
    let lines: Vec<&str> = output.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    Ok((
        Outcome::Failed {
            status: status.to_string(),
            tail,
        },
        elapsed,
    ))
}

/// kusari in its own process group, with SIGTERM when the experiment dies,
/// holding the runs lock until it exits.
#[cfg(unix)]
fn prepare_child(command: &mut Command, lock: Option<&RunsLock>) {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
    let lock_fd = lock.map_or(-1, RunsLock::raw_fd);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(2) and getppid(2) are async-signal-safe.
    let parent = unsafe { libc::getpid() };
    // SAFETY: only async-signal-safe calls (prctl, getppid, raise, fcntl)
    // between fork and exec.
    unsafe {
        command.pre_exec(move || {
            #[cfg(target_os = "linux")]
            {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                if libc::getppid() != parent {
                    // The experiment died before prctl took effect.
                    libc::raise(libc::SIGTERM);
                }
            }
            let flags = if lock_fd >= 0 {
                libc::fcntl(lock_fd, libc::F_GETFD)
            } else {
                -1
            };
            if flags >= 0 {
                libc::fcntl(lock_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            }
            Ok(())
        });
    }
}

#[cfg(not(unix))]
fn prepare_child(_command: &mut Command, _lock: Option<&RunsLock>) {}

/// Echoes what is appended to `path` after `offset` to stderr, until `done`.
fn spawn_echo(path: PathBuf, offset: u64, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut file) = File::open(&path) else {
            return;
        };
        if file.seek(SeekFrom::Start(offset)).is_err() {
            return;
        }
        let mut buffer = vec![0u8; 16 * 1024];
        let mut stderr = std::io::stderr();
        loop {
            let finished = done.load(Ordering::SeqCst);
            match file.read(&mut buffer) {
                Ok(0) | Err(_) => {
                    if finished {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(n) => {
                    let _ = stderr.write_all(&buffer[..n]);
                    let _ = stderr.flush();
                }
            }
        }
    })
}

/// The text of `path` after `offset`.
fn read_from(path: &Path, offset: u64) -> Result<String> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
