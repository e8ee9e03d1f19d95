//! A broker in a child process, for the benches that measure the broker's own resources (its
//! resident memory and CPU time come from `/proc/<pid>`, which an in-process broker would share
//! with the bench's clients and workers).
//!
//! The child is the `plantd-broker` binary (by default the one next to this `plant`), or, when
//! there is none, this `plant` binary re-run as `plant bench serve-broker`, which runs the same
//! broker library with the same environment configuration.
//!
//! The child never collides with a running system: its MDP endpoint and health port are free
//! loopback ports and its buses are off (they bind fixed ports a running `plantd up` holds). If it
//! fails at startup anyway, the error carries the last lines it wrote, which name the port.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use plantd_worker_sdk::client::BrokerInfo;
use plantd_worker_sdk::testing::{free_endpoint, free_port};
use plantd_worker_sdk::Client;

/// Linux reports process CPU time in clock ticks; 100 per second on every mainstream platform.
pub(super) const CLOCK_TICKS_PER_SEC: f64 = 100.0;
/// Lines of the child's stderr kept for an error report.
const STDERR_TAIL: usize = 5;

/// What to run as the broker.
#[derive(Clone, Debug)]
pub enum BrokerBinary {
    /// A `plantd-broker` executable.
    Path(PathBuf),
    /// This executable, as `plant bench serve-broker`.
    ThisPlant(PathBuf),
}

impl BrokerBinary {
    /// `explicit` if given, else the `plantd-broker` next to this executable, else this
    /// executable itself.
    pub fn locate(explicit: Option<&Path>) -> Result<Self> {
        if let Some(path) = explicit {
            if !path.is_file() {
                bail!("{} not found", path.display());
            }
            return Ok(BrokerBinary::Path(path.to_owned()));
        }
        let me = std::env::current_exe()?;
        let sibling = me.with_file_name("plantd-broker");
        if sibling.is_file() {
            Ok(BrokerBinary::Path(sibling))
        } else {
            Ok(BrokerBinary::ThisPlant(me))
        }
    }

    /// How reports name it.
    pub fn describe(&self) -> String {
        match self {
            BrokerBinary::Path(p) => p.display().to_string(),
            BrokerBinary::ThisPlant(p) => format!("{} bench serve-broker", p.display()),
        }
    }

    fn command(&self) -> Command {
        match self {
            BrokerBinary::Path(p) => Command::new(p),
            BrokerBinary::ThisPlant(p) => {
                let mut command = Command::new(p);
                command.args(["bench", "serve-broker"]);
                command
            }
        }
    }
}

/// A broker child process on free loopback ports, killed on drop.
pub struct BrokerProcess {
    child: Child,
    /// The MDP endpoint it binds.
    pub endpoint: String,
    /// What the child said on stderr (which is passed on to ours as it comes).
    stderr_tail: Arc<Mutex<LastWords>>,
    /// The thread passing the child's stderr on; it ends when the child does.
    stderr_reader: Option<JoinHandle<()>>,
}

impl BrokerProcess {
    /// Starts `binary` on a free MDP endpoint and health port, buses off. `env` is applied
    /// after those settings and the log level, so it may override them (turning buses on means
    /// giving them free ports too).
    pub fn spawn(binary: &BrokerBinary, env: &[(String, String)]) -> Result<Self> {
        let endpoint = free_endpoint();
        let mut command = binary.command();
        command
            .env("PLANTD_BROKER_ENDPOINT", &endpoint)
            .env("PLANTD_BROKER_HEALTH_HOST", "127.0.0.1")
            .env("PLANTD_BROKER_HEALTH_PORT", free_port().to_string())
            .env("PLANTD_BROKER_BUS__ENABLED", "false")
            .env("PLANTD_BROKER_LOG_LEVEL", "warn")
            .env_remove("PLANTD_BROKER_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", binary.describe()))?;
        let stderr_tail = Arc::new(Mutex::new(LastWords::default()));
        let stderr_reader = child.stderr.take().map(|stderr| {
            let words = stderr_tail.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    words.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            })
        });
        Ok(BrokerProcess {
            child,
            endpoint,
            stderr_tail,
            stderr_reader,
        })
    }

    /// Why the child stopped, once it has exited: the error it printed, else its last lines.
    fn last_words(&mut self) -> String {
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        self.stderr_tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .summary()
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the broker answers `mmi.broker` (it binds before it answers anything).
    pub fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let client = Client::connect(&self.endpoint)?.with_timeout(Duration::from_millis(500));
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the bench's broker exited at startup ({status}): {}",
                    self.last_words()
                );
            }
            if client.broker_info().is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the broker at {} did not answer mmi.broker", self.endpoint);
            }
        }
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        status_field(self.pid(), "VmRSS:")
    }

    /// The most resident memory the process has had so far (its high-water mark), in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        status_field(self.pid(), "VmHWM:")
    }

    /// CPU time used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_ticks(self.pid()).map(|t| t as f64 / CLOCK_TICKS_PER_SEC)
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A counter of `mmi.broker` (0 if absent).
pub fn counter(info: &BrokerInfo, name: &str) -> u64 {
    info.counters
        .get(name)
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

/// The last lines of a child's stderr, and the error line a binary prints when it fails
/// (`Error: ...`, or `error: ...` from `plantd-broker`, which a backtrace after it would push out
/// of the tail).
#[derive(Default)]
struct LastWords {
    error: Option<String>,
    tail: VecDeque<String>,
}

impl LastWords {
    fn push(&mut self, line: String) {
        if self.error.is_none() && (line.starts_with("Error: ") || line.starts_with("error: ")) {
            self.error = Some(line.clone());
        }
        if self.tail.len() == STDERR_TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    fn summary(&self) -> String {
        match &self.error {
            Some(error) => error.clone(),
            None => self.tail.iter().cloned().collect::<Vec<_>>().join(" / "),
        }
    }
}

/// A `/proc/<pid>/status` field in KiB.
fn status_field(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// CPU time of `pid` (user + system) in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    stat_cpu_ticks(&format!("/proc/{pid}/stat"))
}

/// CPU time (user + system, clock ticks) from a `/proc` `stat` file: a process's
/// (`/proc/<pid>/stat`) or one thread's (`/proc/<pid>/task/<tid>/stat`).
pub(super) fn stat_cpu_ticks(path: &str) -> Result<u64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("bad /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields
        .get(11)
        .and_then(|v| v.parse().ok())
        .context("no utime")?;
    let stime: u64 = fields
        .get(12)
        .and_then(|v| v.parse().ok())
        .context("no stime")?;
    Ok(utime + stime)
}

/// Raises this process's soft limit on open files (`RLIMIT_NOFILE`) to its hard limit, which
/// child processes started afterwards inherit, and returns the limit now in force. Thousands of
/// peer sockets need thousands of descriptors (a TCP connection and, per libzmq socket, a
/// mailbox).
pub fn raise_open_files_limit() -> Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read or write the struct passed by pointer, which
    // lives on this stack frame for the duration of each call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        bail!(
            "cannot read RLIMIT_NOFILE: {}",
            std::io::Error::last_os_error()
        );
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            bail!(
                "cannot raise RLIMIT_NOFILE to {}: {}",
                limit.rlim_max,
                std::io::Error::last_os_error()
            );
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}
