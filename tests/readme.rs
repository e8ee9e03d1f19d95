//! The README, run as written, so it cannot drift from what the code does.
//!
//! - Every command line of its `sh` blocks runs in order, as a new user runs them, in a fresh
//!   directory (its own `HOME` and XDG directories, no `PLANTD_*` settings of ours): `plantd up`,
//!   then `plant` commands through `sh -c` with the built `plant` on `PATH`, each of which must
//!   exit 0 and print what a `# → text` comment says it prints. A line the test does not know
//!   fails it: new README commands need a rule here.
//! - Its worker snippet is `examples/greeter.rs`, verbatim.
//! - Its port table lists what `plantd up --print-ports` prints.
//! - Every `-p <package>` in the README and `docs/` names a package with exactly one binary, so
//!   `cargo run -p <package>` works as written.
//!
//! Where a line cannot run exactly as written, the rule for it says why (see [`Step`]). The one
//! thing added to every command is where the system is: `plantd up` runs moved onto free ports by
//! `PLANTD_UP_PORT_OFFSET`, and `plant` finds it through `PLANTD_CLIENT_ENDPOINT`, both variables
//! the README documents, so that this test never meets a system running on the default ports.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin_dir, example_binary, isolated, plant_binary, Background, Plantd};
use plantd_worker_sdk::testing::wait_until;
use plantd_worker_sdk::Client;
use serde_json::Value;

/// Longest a README command may take (the bus subscription waits for the metric producer's next
/// sample, every 5 s).
const COMMAND_DEADLINE: Duration = Duration::from_secs(90);

fn workspace_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The contents of every fenced block of `language` in `markdown`, in order.
fn blocks(markdown: &str, language: &str) -> Vec<String> {
    let fence = format!("```{language}");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_end() == fence => current = Some(String::new()),
            Some(block) if line.trim_end() == "```" => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// What the walkthrough does with one README line.
enum Step<'a> {
    /// `cargo run --release -- up`: the `plantd` binary this test was built with (a release
    /// build inside a test would take many minutes on a 2-core machine; it is the same code).
    Up,
    /// `cargo run --release -p plantd-client -- ARGS`: `plant ARGS`, same reason.
    PlantFromSource(&'a str),
    /// `cargo install --path client`: not run, it would write to the real `~/.cargo/bin`. What it
    /// achieves, `plant` on `PATH`, the test does with the built binary.
    Install,
    /// `cargo run --example greeter`: the built example, pointed at this test's broker with its
    /// `PLANTD_GREETER_BROKER_ENDPOINT`.
    Greeter,
    /// `plant bench ...`: run with a smaller shape appended. As written each is a measurement of
    /// seconds to minutes (1,000 idle clients, a million messages, several rounds); shrunk, the
    /// test still shows that each starts its own broker and finishes beside a running system.
    Bench(&'a str, &'static str),
    /// Any other `plant ...` line: run as written.
    Plant(&'a str),
    /// `curl ... http://127.0.0.1:8080/...`: run as written, against the proxy of this test's
    /// system (its port moved by the offset like every other).
    Curl(&'a str),
}

fn step(command: &str) -> Step<'_> {
    const BENCHES: [(&str, &str); 5] = [
        (
            "plant bench broker",
            "--requests 500 --rounds 1 --clients 1",
        ),
        (
            "plant bench idle",
            "--clients 5 --workers 2 --seconds 1 --heartbeat-ms 200",
        ),
        ("plant bench state", "--seconds 0.2 --clients 2"),
        ("plant bench bus", "--messages 2000 --rounds 1"),
        (
            "plant bench proxy",
            "--seconds 0.2 --rounds 1 --connections 4",
        ),
    ];
    if command == "cargo run --release -- up" {
        return Step::Up;
    }
    if let Some(args) = command.strip_prefix("cargo run --release -p plantd-client -- ") {
        return Step::PlantFromSource(args);
    }
    if command == "cargo install --path client" {
        return Step::Install;
    }
    if command == "cargo run --example greeter" {
        return Step::Greeter;
    }
    if let Some((_, shrink)) = BENCHES.iter().find(|(b, _)| command.starts_with(b)) {
        return Step::Bench(command, shrink);
    }
    if command.starts_with("plant ") {
        return Step::Plant(command);
    }
    if command.starts_with("curl ") && command.contains("http://127.0.0.1:8080/") {
        return Step::Curl(command);
    }
    panic!("the README walkthrough test has no rule for this README command: {command}")
}

/// One line of a `sh` block: the command, and the text its `# → ...` comment says it prints.
fn parse_line(line: &str) -> (&str, Option<&str>) {
    // Comments start at a `#` after whitespace (the commands themselves hold none).
    let (command, comment) = match line.find(" #") {
        Some(at) => (&line[..at], Some(line[at + 2..].trim())),
        None => (line, None),
    };
    let expected = comment.and_then(|c| c.strip_prefix("→ "));
    (command.trim(), expected)
}

/// The walkthrough's fresh directory, its system and the environment of its commands.
struct Walkthrough {
    dir: tempfile::TempDir,
    plantd: Option<Plantd>,
    greeter: Option<Background>,
}

impl Walkthrough {
    fn plantd(&self) -> &Plantd {
        self.plantd
            .as_ref()
            .expect("the README starts plantd up before anything talks to it")
    }

    /// Runs `command` with `sh -c` in the walkthrough's directory, `plant` on `PATH` and
    /// `PLANTD_CLIENT_ENDPOINT` at our system; fails the test unless it exits 0 in time.
    fn sh(&self, command: &str) -> Output {
        let path = std::env::join_paths(std::iter::once(bin_dir()).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )))
        .unwrap();
        let child = isolated("sh", self.dir.path())
            .arg("-c")
            .arg(command)
            .env("PATH", path)
            .env("PLANTD_CLIENT_ENDPOINT", &self.plantd().endpoint)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh runs");
        let output = finish(child, command);
        assert!(
            output.status.success(),
            "README command `{command}` failed ({}):\nstdout: {}\nstderr: {}\nplantd stderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.plantd().stderr()
        );
        output
    }
}

/// Waits for `child` (running `command`) to exit within [`COMMAND_DEADLINE`], collecting its
/// output; kills it and fails the test otherwise.
fn finish(mut child: Child, command: &str) -> Output {
    // Drain both pipes meanwhile, so a chatty command never blocks on a full one.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut text).map(|_| text)
    });
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut text).map(|_| text)
    });
    let end = Instant::now() + COMMAND_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("README command `{command}` did not finish within {COMMAND_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap().unwrap_or_default(),
        stderr: err.join().unwrap().unwrap_or_default(),
    }
}

fn check_output(command: &str, output: &Output, expected: Option<&str>) {
    if let Some(expected) = expected {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(expected),
            "README says `{command}` prints {expected:?}; it printed:\n{stdout}"
        );
    }
}

#[test]
fn every_readme_command_runs_as_written() {
    let readme = workspace_file("README.md");
    // Built up front: the walkthrough's `plant` is the one on PATH.
    plant_binary();
    let mut walk = Walkthrough {
        dir: tempfile::tempdir().unwrap(),
        plantd: None,
        greeter: None,
    };
    let mut ran = 0;
    for block in blocks(&readme, "sh") {
        for line in block.lines().filter(|l| !l.trim().is_empty()) {
            let (command, expected) = parse_line(line);
            match step(command) {
                Step::Up => {
                    let plantd = Plantd::start(walk.dir.path(), &[], &[]);
                    // The banner's advice is runnable as printed.
                    let advice = plantd
                        .banner
                        .lines()
                        .map(str::trim)
                        .find(|l| l.starts_with("cargo run --release -p plantd-client -- "))
                        .unwrap_or_else(|| panic!("no advice in the banner:\n{}", plantd.banner))
                        .to_owned();
                    walk.plantd = Some(plantd);
                    let Step::PlantFromSource(args) = step(&advice) else {
                        unreachable!("matched by its prefix")
                    };
                    let output = walk.sh(&format!("plant {args}"));
                    check_output(&advice, &output, Some("hello"));
                }
                Step::PlantFromSource(args) => {
                    let output = walk.sh(&format!("plant {args}"));
                    check_output(command, &output, expected);
                }
                Step::Install => {}
                Step::Greeter => {
                    let greeter = isolated(example_binary("greeter"), walk.dir.path())
                        .env("PLANTD_GREETER_BROKER_ENDPOINT", &walk.plantd().endpoint)
                        .stdin(Stdio::null())
                        .spawn()
                        .expect("the greeter starts");
                    walk.greeter = Some(Background::new(greeter, "the greeter"));
                    let client = Client::connect(&walk.plantd().endpoint)
                        .unwrap()
                        .with_timeout(Duration::from_secs(5));
                    wait_until("the greeter is registered", || {
                        client
                            .service_available("org.example.Greeter")
                            .unwrap_or(false)
                    });
                }
                Step::Bench(command, shrink) => {
                    walk.sh(&format!("{command} {shrink}"));
                }
                Step::Plant(command) => {
                    let output = walk.sh(command);
                    check_output(command, &output, expected);
                }
                Step::Curl(command) => {
                    let proxy = format!("http://127.0.0.1:{}/", walk.plantd().port(8080));
                    let output = walk.sh(&command.replace("http://127.0.0.1:8080/", &proxy));
                    check_output(command, &output, expected);
                }
            }
            ran += 1;
        }
    }
    assert!(ran >= 20, "only {ran} README commands found");

    // What the commands left behind: the backup, in the backup directory next to the database.
    let backups: Vec<PathBuf> = std::fs::read_dir(walk.dir.path().join("plantd-data/backups"))
        .expect("the backup directory")
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        backups.iter().any(|p| p.extension() == Some("db".as_ref())),
        "{backups:?}"
    );

    // Ctrl-C stops the greeter and plantd up, each with exit code 0.
    if let Some(mut greeter) = walk.greeter.take() {
        let status = greeter.interrupt();
        assert!(status.success(), "the greeter exited with {status}");
    }
    let status = walk.plantd.as_mut().expect("plantd").interrupt();
    assert!(status.success(), "plantd exited with {status}");
}

#[test]
fn the_readme_worker_is_the_greeter_example_verbatim() {
    let readme = workspace_file("README.md");
    let example = workspace_file("examples/greeter.rs");
    let rust = blocks(&readme, "rust");
    assert!(
        rust.contains(&example),
        "README's worker snippet differs from examples/greeter.rs; paste the file into README.md"
    );
}

#[test]
fn the_readme_port_table_lists_every_port_plantd_up_binds() {
    let readme = workspace_file("README.md");
    let dir = tempfile::tempdir().unwrap();
    let output = isolated(env!("CARGO_BIN_EXE_plantd"), dir.path())
        .args(["up", "--print-ports"])
        .output()
        .expect("plantd runs");
    assert!(output.status.success(), "{output:?}");
    let listed = String::from_utf8(output.stdout).unwrap();
    let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| ")).collect();
    for line in listed.lines().skip(1) {
        let mut words = line.split_whitespace();
        let port = words.next().unwrap();
        let variable = line
            .split_whitespace()
            .find(|w| w.starts_with("PLANTD_"))
            .unwrap_or_else(|| panic!("no variable in {line:?}"))
            .trim_end_matches(',');
        let row = rows
            .iter()
            .find(|row| row.starts_with(&format!("| {port} |")))
            .unwrap_or_else(|| panic!("README's port table has no row for port {port}"));
        assert!(
            row.contains(variable),
            "README's row for port {port} does not name {variable}: {row}"
        );
    }
}

#[test]
fn every_package_the_docs_run_has_one_binary() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "{output:?}");
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let binaries = |package: &str| {
        metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == package)
            .map(|p| {
                p["targets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|t| t["kind"].as_array().unwrap().contains(&"bin".into()))
                    .count()
            })
    };
    let mut docs = vec![("README.md".to_owned(), workspace_file("README.md"))];
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension() == Some("md".as_ref()) {
            let name = path.display().to_string();
            docs.push((name, std::fs::read_to_string(&path).unwrap()));
        }
    }
    let mut checked = 0;
    for (name, text) in &docs {
        assert!(
            !text.contains("cargo run --release --bin") && !text.contains("cargo run --bin"),
            "{name}: the bins live in their own packages; use cargo run -p <package>"
        );
        for (at, _) in text.match_indices("-p plantd") {
            let package: String = text[at + 3..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            assert_eq!(
                binaries(&package),
                Some(1),
                "{name} runs `-p {package}`: not a workspace package with exactly one binary"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 6,
        "only {checked} `-p` packages found in the docs"
    );
}

#[test]
fn the_docs_cite_only_files_in_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension() == Some("md".as_ref()) {
            docs.push(path);
        }
    }
    // Top-level entries a cited path may start with, whether they exist or not (`reference/`).
    let tops: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        // Build output is made by the commands the docs give, not cited from the repository.
        .filter(|name| name != "target")
        .chain(["reference".to_owned(), "shared".to_owned()])
        .collect();
    let mut checked = 0;
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        let cited = text
            .split(|c: char| c == '`' || c.is_whitespace() || "()[],;:".contains(c))
            .map(|word| word.trim_end_matches('.'));
        for word in cited {
            // Bare `.md` names are docs; other bare names (`main.rs`) are not citations.
            let looks_like_a_doc = word.ends_with(".md");
            let first = word
                .trim_start_matches("../")
                .split('/')
                .next()
                .unwrap_or("");
            let in_repo = word.contains('/') && tops.iter().any(|t| t == first);
            if !(looks_like_a_doc || in_repo) || word.contains('<') || word.contains('*') {
                continue;
            }
            // A bare file name is a doc beside this one or at the top; a path is from the top.
            let exists = root.join(word).exists()
                || (!word.contains('/') && root.join("docs").join(word).exists());
            assert!(
                exists,
                "{} cites {word}, which is not in the repository: the docs must stand on their own",
                doc.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} citations found");
}
