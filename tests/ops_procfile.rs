//! The root `Procfile` run for real under honcho, the way an operator runs it: every `/healthz`
//! answers 200, `plant echo` and a logged-in state round trip go through it, every service logs
//! DESIGN.md §6 JSON lines with `LOG_FORMAT=json`, and SIGTERM to honcho stops every process with
//! exit code 0. `.env.example` is checked too: every variable it sets is one the Procfile or a
//! service reads, and each is explained.
//!
//! Needs `honcho` (`pip install honcho`); without it the honcho test prints why and passes, unless
//! `PLANTD_REQUIRE_OPS=1` (set by `.ci/run`, which installs it). The Procfile runs
//! `$PLANTD_BIN/plantd-*`: here the binaries of this test build (`target/debug` under
//! `cargo test`), so CI needs no second, release build.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ops::{self, HEALTH_PORTS, PENDING, SERVICES};
use common::{bin_dir, free_port_offset, isolated, plant_binary, workspace_binary};
use plantd_worker_sdk::testing::WAIT_DEADLINE;
use serde_json::Value;

/// The Procfile's process names, in file order, with the prefix of the service each runs.
const PROCESSES: [(&str, &str); 7] = [
    ("broker", "BROKER"),
    ("state", "STATE"),
    ("identity", "IDENTITY"),
    ("logger", "LOGGER"),
    ("proxy", "PROXY"),
    ("echo", "ECHO"),
    ("metric", "METRIC"),
];

/// The variables the Procfile itself reads (not service configuration).
const PROCFILE_OWN: [&str; 2] = ["PLANTD_BIN", "PLANTD_DATA"];

/// honcho running the Procfile, killed if the test fails first.
struct Honcho {
    child: Option<Child>,
    output: Arc<Mutex<String>>,
}

impl Drop for Honcho {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // honcho leads its own process group: take the services down with it.
            let _ = Command::new("kill")
                .args(["-KILL", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn procfile_lines() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(ops::repo().join("Procfile")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(": "))
        .map(|(n, c)| (n.to_owned(), c.to_owned()))
        .collect()
}

#[test]
fn the_procfile_runs_each_service_binary_directly() {
    let lines = procfile_lines();
    let names: Vec<&str> = lines.iter().map(|(n, _)| n.as_str()).collect();
    let want: Vec<&str> = PROCESSES.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, want, "one line per service, in this order");
    for ((name, command), service) in lines.iter().zip(&SERVICES) {
        // `exec` replaces the shell, so SIGTERM reaches the service and its exit code is the
        // process's.
        let tail = format!(
            "exec \"${{PLANTD_BIN:-target/release}}/{}\"",
            service.binary
        );
        assert!(command.ends_with(&tail), "{name}: {command}");
    }
    // The pending services are there, commented out, for when their crates land.
    let text = std::fs::read_to_string(ops::repo().join("Procfile")).unwrap();
    for pending in PENDING {
        let line = format!("# {}: exec ", pending.to_lowercase());
        assert!(text.contains(&line), "Procfile lacks {line:?}");
    }
}

#[test]
fn env_example_sets_only_variables_something_reads_and_explains_each() {
    let path = ops::repo().join(".env.example");
    let vars = ops::env_file(&path);
    let text = std::fs::read_to_string(&path).unwrap();
    let procfile = std::fs::read_to_string(ops::repo().join("Procfile")).unwrap();
    // Every PLANTD_* the Procfile uses is in .env.example.
    for word in procfile.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("PLANTD_") {
            assert!(text.contains(word), ".env.example lacks {word}");
        }
    }
    // Each variable is preceded by a comment line explaining it.
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let name = line.trim_start_matches("# ").split('=').next().unwrap();
        if name.starts_with("PLANTD_") && line.contains('=') {
            assert!(
                i > 0 && lines[i - 1].starts_with('#'),
                "{name} has no explanation above it"
            );
        }
    }
    // Commented-out variables are checked as well as set ones.
    let mut all = vars.clone();
    for line in text.lines().filter_map(|l| l.strip_prefix("# ")) {
        if let Some((k, v)) = line.split_once('=') {
            if k.starts_with("PLANTD_") && !k.contains(' ') {
                all.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    assert!(all.len() >= PROCFILE_OWN.len() + 3, "{all:?}");
    ops::assert_services_read(&all, &PROCFILE_OWN, ".env.example");
}

/// Polls `GET /healthz` on `port` until it answers 200.
fn wait_healthy(name: &str, port: u16, honcho: &Honcho) {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((200, _)) = common::healthz(port) {
            return;
        }
        assert!(
            Instant::now() < end,
            "{name} /healthz on {port} never answered 200; honcho said:\n{}",
            honcho.output.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn honcho_runs_the_procfile_and_sigterm_stops_every_process_cleanly() {
    if !ops::tool_ready(
        "honcho",
        &["--version"],
        "pip install honcho",
        "the Procfile run",
    ) {
        return;
    }
    for service in &SERVICES {
        workspace_binary(service.binary, service.package);
    }
    let plant = plant_binary();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Not the default ports: other systems may run on this machine. The same variables an
    // operator would put in .env to run a second system.
    let offset = free_port_offset();
    let mut env: BTreeMap<String, String> = ops::moved_env(offset);
    env.insert("PLANTD_BIN".into(), bin_dir().display().to_string());
    env.insert("PLANTD_DATA".into(), data.display().to_string());
    for (_, svc) in PROCESSES {
        env.insert(format!("PLANTD_{svc}_LOG_FORMAT"), "json".into());
    }
    let env_path = dir.path().join("test.env");
    let mut file = std::fs::File::create(&env_path).unwrap();
    for (k, v) in &env {
        // honcho's .env parser takes single-quoted values literally.
        writeln!(file, "{k}='{v}'").unwrap();
    }
    drop(file);

    let mut command = isolated("honcho", dir.path());
    command
        .arg("--no-colour")
        .arg("-f")
        .arg(ops::repo().join("Procfile"))
        .arg("-e")
        .arg(&env_path)
        .arg("-d")
        .arg(dir.path())
        .arg("start")
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own process group, so a failed test can kill every service with it.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().expect("honcho starts");
    let output = Arc::new(Mutex::new(String::new()));
    let mut readers = Vec::new();
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let output = output.clone();
        readers.push(std::thread::spawn(move || {
            let mut pipe = pipe;
            let mut buffer = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buffer) {
                output
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        }));
    }
    let mut honcho = Honcho {
        child: Some(child),
        output,
    };

    for (svc, port) in HEALTH_PORTS {
        wait_healthy(svc, port + offset, &honcho);
    }
    let endpoint = format!("tcp://127.0.0.1:{}", 9797 + offset);
    let plant = |args: &[&str], stdin: Option<&str>| {
        let mut child = isolated(&plant, dir.path())
            .args(["--endpoint", &endpoint, "--timeout", "10s"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "plant {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        plant(&["echo", "through honcho"], None).trim(),
        "through honcho"
    );

    // Auth is required: log in as the admin identity bootstrapped in the data directory.
    let password = std::fs::read_to_string(data.join("admin-password")).expect("admin-password");
    plant(
        &["auth", "login", "-u", "admin", "--password-stdin"],
        Some(&password),
    );
    plant(&["state", "create-scope", "--scope", "ops.procfile"], None);
    plant(
        &[
            "state",
            "set",
            "--scope",
            "ops.procfile",
            "pump",
            r#"{"rpm": 1200}"#,
        ],
        None,
    );
    let got: Value = serde_json::from_str(&plant(
        &[
            "--output",
            "json",
            "state",
            "get",
            "--scope",
            "ops.procfile",
            "pump",
        ],
        None,
    ))
    .unwrap();
    assert_eq!(got["value"], serde_json::json!({"rpm": 1200}), "{got}");

    // SIGTERM to honcho, as Overmind or a terminal's Ctrl-C would: it forwards it to each service.
    let mut child = honcho.child.take().unwrap();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let end = Instant::now() + WAIT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > end {
            honcho.child = Some(child);
            panic!(
                "honcho did not stop after SIGTERM:\n{}",
                honcho.output.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Everything honcho and the services printed, to the end of the pipes.
    for reader in readers {
        reader.join().unwrap();
    }
    let output = honcho.output.lock().unwrap().clone();
    for (name, _) in PROCESSES {
        assert!(
            output.contains(&format!("{name}.1 stopped (rc=0)")),
            "{name} did not exit 0:\n{output}"
        );
    }
    // honcho itself reports the signal it was stopped by (128 + SIGTERM), whatever its children
    // did; their own exit codes are the lines above.
    assert!(
        matches!(status.code(), Some(0 | 143)),
        "honcho exited {status}:\n{output}"
    );

    // LOG_FORMAT=json: every service wrote DESIGN.md §6 lines (timestamp, level, service,
    // message), which Promtail or Loki ingest as they are.
    for (name, _) in PROCESSES {
        let prefix = format!("{name}.1");
        let line = output
            .lines()
            .filter_map(|l| {
                l.split_once(" | ")
                    .filter(|(p, _)| p.trim_end().ends_with(&prefix))
            })
            .find_map(|(_, json)| serde_json::from_str::<Value>(json).ok())
            .unwrap_or_else(|| panic!("no JSON log line from {name}:\n{output}"));
        for field in ["timestamp", "level", "service", "message"] {
            assert!(line[field].is_string(), "{name}: {field} missing in {line}");
        }
        chrono::DateTime::parse_from_rfc3339(line["timestamp"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{name}: timestamp {line}: {e}"));
        assert!(
            line["service"].as_str().unwrap().starts_with("plantd"),
            "{line}"
        );
    }
}
