//! Issue test 4: crash safety. The real `plantd-state` binary runs as a child process against an
//! in-process broker while clients stream sets; the child is killed with SIGKILL mid-stream. After a
//! restart every set that was acknowledged is present with its value.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::{call, data, wait_for, Harness, StateProcess};
use plantd_worker_sdk::client::Client;
use serde_json::{json, Value};

const WRITERS: usize = 8;
/// Acknowledged sets to wait for before the kill, so it lands mid-stream.
const ACKED_BEFORE_KILL: usize = 2000;

#[test]
fn every_acknowledged_set_survives_sigkill() {
    let h = Harness::broker_only();
    let mut child = StateProcess::spawn(&h, &[]);
    h.wait_until_serving();

    let acked: Mutex<HashMap<String, Value>> = Mutex::new(HashMap::new());
    let acked_count = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (acked, acked_count, stop) = (&acked, &acked_count, &stop);
            let client = Client::connect(&h.endpoint)
                .unwrap()
                .with_timeout(Duration::from_secs(2));
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{w}-{i}");
                    let value = json!({"writer": w, "seq": i, "pad": "x".repeat(64)});
                    let body =
                        json!({"service": format!("crash-{}", w % 3), "key": key, "value": value});
                    let reply = client.request(
                        "org.plantd.State",
                        vec![b"state-set".to_vec(), body.to_string().into_bytes()],
                    );
                    // Only a success reply counts; timeouts and errors around the kill are unknowns.
                    if let Ok(frames) = reply {
                        let reply: Value = serde_json::from_slice(&frames[0]).unwrap();
                        if reply["success"] == json!(true) {
                            acked
                                .lock()
                                .unwrap()
                                .insert(format!("{}/{key}", w % 3), value);
                            acked_count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += 1;
                }
            });
        }
        wait_for("acknowledged sets before the kill", || {
            acked_count.load(Ordering::Relaxed) >= ACKED_BEFORE_KILL
        });
        child.0.kill().expect("SIGKILL the state service");
        child.0.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
    });

    let _restarted = StateProcess::spawn(&h, &[]);
    h.wait_until_serving();
    let acked = acked.into_inner().unwrap();
    assert!(acked.len() >= ACKED_BEFORE_KILL);
    let client = h.client();
    let mut by_scope: HashMap<String, Vec<(String, Value)>> = HashMap::new();
    for (path, value) in acked {
        let (scope, key) = path.split_once('/').unwrap();
        by_scope
            .entry(format!("crash-{scope}"))
            .or_default()
            .push((key.to_owned(), value));
    }
    for (scope, entries) in by_scope {
        for chunk in entries.chunks(500) {
            let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
            let got = data(call(
                &client,
                "state-get-many",
                &json!({"service": scope, "keys": keys}),
            ));
            assert_eq!(
                got["missing"],
                json!([]),
                "acknowledged sets lost in {scope}"
            );
            for (key, value) in chunk {
                assert_eq!(&got["values"][key], value, "{scope}/{key}");
            }
        }
    }
}
