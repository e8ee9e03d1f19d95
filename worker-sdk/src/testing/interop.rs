//! The independent Python MDP peers of `tests/interop/mdp_peers.py` (pyzmq, written from the RFCs
//! and sharing no code with plantd), for interop tests in any crate of the workspace.
//!
//! They need `python3` with `pyzmq`. Without it [`python_ready`] says why the test is skipped and
//! returns false, unless `PLANTD_REQUIRE_INTEROP` is set (by `.ci/run`, which installs pyzmq):
//! then a missing pyzmq fails the test instead of hiding it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The peers script (roles `client01`, `client02`, `worker01`, `worker02`, `broker01`).
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/interop/mdp_peers.py");

/// Whether `python3` with `pyzmq` is available; when not, prints that the test is skipped, or
/// panics if `PLANTD_REQUIRE_INTEROP` is set.
pub fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import zmq"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var("PLANTD_REQUIRE_INTEROP").is_err(),
            "PLANTD_REQUIRE_INTEROP is set but python3 with pyzmq is not available"
        );
        eprintln!("skipping interop test: python3 with pyzmq not found (pip install pyzmq)");
    }
    ok
}

/// A running Python peer, killed when dropped.
pub struct PythonPeer(Child);

impl PythonPeer {
    /// Starts the peer `role` with `args` (see the script's usage); its stdout is piped.
    pub fn spawn(args: &[&str]) -> PythonPeer {
        PythonPeer::spawn_with_env(args, &[])
    }

    /// [`spawn`](Self::spawn) with extra environment variables (the script's CURVE settings,
    /// `MDP_CURVE_SERVER_KEY` and `MDP_CURVE_SECRET_KEY_FILE`).
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> PythonPeer {
        assert!(Path::new(SCRIPT).is_file(), "{SCRIPT} is missing");
        PythonPeer(
            Command::new("python3")
                .arg(SCRIPT)
                .args(args)
                .envs(env.iter().copied())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn python3"),
        )
    }

    /// Starts the minimal RFC 7 broker (`broker01`: MDP/0.1 only, with `mmi.service`) bound to
    /// `endpoint`, and returns once it says it is bound.
    pub fn rfc7_broker(endpoint: &str) -> PythonPeer {
        let mut broker = PythonPeer::spawn(&["broker01", endpoint]);
        let mut line = String::new();
        BufReader::new(broker.0.stdout.as_mut().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read the broker's READY");
        assert_eq!(line.trim(), "READY", "the Python broker did not start");
        broker
    }
}

impl Drop for PythonPeer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a Python client role to completion and parses the JSON it prints.
pub fn run_client(args: &[&str]) -> serde_json::Value {
    run_client_with_env(args, &[])
}

/// [`run_client`] with extra environment variables (see [`PythonPeer::spawn_with_env`]).
pub fn run_client_with_env(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(SCRIPT)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("client prints JSON")
}

/// Frames as the script takes and prints them: lowercase hex, one string per frame.
pub fn hex(frames: &[&[u8]]) -> Vec<String> {
    frames
        .iter()
        .map(|f| f.iter().map(|b| format!("{b:02x}")).collect())
        .collect()
}
