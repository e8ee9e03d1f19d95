//! What the root integration tests share: the workspace's binaries, commands isolated from the
//! caller's setup, and `plantd up` on free ports (moved there with its port offset).

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plantd_worker_sdk::testing::WAIT_DEADLINE;

pub mod browser;
pub mod ops;

/// Every port `plantd up` binds by default: MDP, the health ports of broker, state, logger, echo
/// and metric, and the three buses' frontends and backends.
pub const DEFAULT_PORTS: [u16; 15] = [
    9797, 8080, 8081, 8082, 8083, 8084, 8085, 8086, 8087, 11000, 11001, 12000, 12001, 13000, 13001,
];

/// The build directory holding the binaries (`target/debug` or `target/release`).
pub fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_plantd"))
        .parent()
        .expect("plantd is in a directory")
        .to_owned()
}

/// Runs `cargo build` with `args` for the profile these tests were built with.
fn cargo_build(args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.arg("build").args(args);
    if bin_dir().file_name() == Some("release".as_ref()) {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "cargo build {args:?} failed");
}

/// The binary `name` of workspace package `package`, next to `plantd`. `cargo test --workspace`
/// builds it; when only this package is tested, it is built here.
pub fn workspace_binary(name: &str, package: &str) -> PathBuf {
    let path = bin_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        cargo_build(&["-p", package, "--bin", name]);
    }
    path
}

/// The `plant` CLI.
pub fn plant_binary() -> PathBuf {
    workspace_binary("plant", "plantd-client")
}

/// The root package's example `name` (`cargo test` builds examples; built here if missing).
pub fn example_binary(name: &str) -> PathBuf {
    let path = bin_dir()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        cargo_build(&["-p", "plantd", "--example", name]);
    }
    path
}

/// `program` run in `dir` as a new user would run it there: `HOME` and the XDG directories in
/// `dir` (so no `~/.config/plantd` file is read), and none of the caller's `PLANTD_*` settings
/// or `RUST_LOG`.
pub fn isolated(program: impl AsRef<std::ffi::OsStr>, dir: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .current_dir(dir)
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join(".config"))
        .env("XDG_DATA_HOME", dir.join(".local/share"))
        .env("XDG_CACHE_HOME", dir.join(".cache"))
        .env_remove("RUST_LOG");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PLANTD_") {
            command.env_remove(name);
        }
    }
    command
}

/// A `--port-offset` that moves every default port of `plantd up` onto ports free right now and
/// never handed out before by this test process (so two systems started by parallel tests never
/// share one), all below Linux's ephemeral ports so no outgoing connection takes one meanwhile.
pub fn free_port_offset() -> u16 {
    plantd_worker_sdk::testing::free_port_offset(&DEFAULT_PORTS)
}

/// A child process, killed when dropped: a failing test must not leave it running (holding the
/// test's output pipes open, among other things).
pub struct Background {
    child: Option<Child>,
    what: &'static str,
}

impl Background {
    /// Takes charge of `child`, called `what` in failures.
    pub fn new(child: Child, what: &'static str) -> Background {
        Background {
            child: Some(child),
            what,
        }
    }

    /// Sends SIGINT (Ctrl-C) and waits for the exit status, failing after [`WAIT_DEADLINE`].
    pub fn interrupt(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("still running");
        let killed = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let end = Instant::now() + WAIT_DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not stop after SIGINT", self.what);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running `plantd up`, killed if the test ends before stopping it.
pub struct Plantd {
    process: Background,
    /// Its port offset.
    pub offset: u16,
    /// Where clients reach its broker.
    pub endpoint: String,
    /// The directory it runs in, also the HOME its `plant` commands see (its saved login).
    pub dir: PathBuf,
    /// What it printed once up, up to and including the line that ends the banner.
    pub banner: String,
    /// Its stderr so far.
    stderr: Arc<Mutex<String>>,
}

/// The line that ends the "is up" banner.
pub const BANNER_END: &str = "Ctrl-C stops everything.";

impl Plantd {
    /// `plantd up args...` in `dir` with `env`, moved onto free ports with `PLANTD_UP_PORT_OFFSET`;
    /// returns once it printed its banner. Tries another offset if a port was taken meanwhile.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Plantd {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Plantd::try_start(dir, free_port_offset(), args, env) {
                Ok(plantd) => return plantd,
                // Another test process took one of the ports after we looked: try elsewhere.
                // Either caught by `up`'s own check, or taken between that check and the bind.
                Err(stderr)
                    if stderr.contains("is taken") || stderr.contains("Address already in use") =>
                {
                    failures.push(stderr)
                }
                Err(stderr) => panic!("plantd up failed:\n{stderr}"),
            }
        }
        panic!("plantd up found a port taken three times: {failures:#?}")
    }

    /// `plantd up` at `offset`: `Ok` once its banner is printed, else its stderr once it exited.
    pub fn try_start(
        dir: &Path,
        offset: u16,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Plantd, String> {
        let mut command = isolated(env!("CARGO_BIN_EXE_plantd"), dir);
        command
            .arg("up")
            .args(args)
            .env("PLANTD_UP_PORT_OFFSET", offset.to_string())
            .env("PLANTD_UP_LOG_LEVEL", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("plantd starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let collected = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buffer) {
                let text = String::from_utf8_lossy(&buffer[..n]);
                eprint!("{text}");
                collected.lock().unwrap().push_str(&text);
            }
        });
        // Readiness: plantd prints the banner once every service answers /healthz with UP.
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut banner = String::new();
        for line in lines.by_ref() {
            let line = line.expect("readable stdout");
            banner.push_str(&line);
            banner.push('\n');
            if line.contains(BANNER_END) {
                break;
            }
        }
        if !banner.contains(BANNER_END) {
            // Stdout closed without a banner: plantd exited.
            let status = child.wait().expect("wait");
            stderr_reader.join().expect("stderr reader");
            let stderr = stderr.lock().unwrap().clone();
            return Err(format!(
                "exit {status}, stdout {banner:?}, stderr:\n{stderr}"
            ));
        }
        // Keep draining stdout so plantd never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Plantd {
            process: Background::new(child, "plantd"),
            offset,
            endpoint: format!("tcp://127.0.0.1:{}", 9797 + offset),
            dir: dir.to_owned(),
            banner,
            stderr,
        })
    }

    /// The health port of the service whose default health port is `default`.
    pub fn port(&self, default: u16) -> u16 {
        default + self.offset
    }

    /// What plantd wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Runs `plant --endpoint <ours> args...` as the user who ran `plantd up` (same HOME, so
    /// with the admin login `up` saved).
    pub fn plant(&self, args: &[&str]) -> Output {
        isolated(plant_binary(), &self.dir)
            .args(["--endpoint", &self.endpoint, "--timeout", "10s"])
            .args(args)
            .env_remove("PLANTD_CLIENT_OUTPUT")
            .output()
            .expect("plant runs")
    }

    /// Runs `plant` and returns its stdout, failing the test on a non-zero exit.
    pub fn plant_ok(&self, args: &[&str]) -> String {
        let output = self.plant(args);
        assert!(
            output.status.success(),
            "plant {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 output")
    }

    /// Sends SIGINT and waits for the exit status.
    pub fn interrupt(&mut self) -> ExitStatus {
        self.process.interrupt()
    }
}

/// The status and JSON body of `GET /healthz` on a local port, if it answers.
pub fn healthz(port: u16) -> Option<(u16, serde_json::Value)> {
    let response = reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz")).ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().ok()?))
}
