//! Worker churn under load: two credit-8 `plantd-state` processes share one database; one at a time
//! is killed with SIGKILL mid-load and replaced at once, while a client keeps sets in flight. Every
//! set must get exactly one answer (an acknowledgement or a clear error), every acknowledged set
//! must be readable afterwards, and the broker's books must balance.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{call, data, wait_for, Harness, StateProcess};
use plantd_worker_sdk::testing::{assert_broker_balanced, RequestLoad};
use serde_json::{json, Value};

const SETTINGS: [(&str, &str); 2] = [
    ("PLANTD_STATE_CREDIT", "8"),
    ("PLANTD_STATE_CONCURRENCY", "1"),
];
const SETS: usize = 6_000;
/// Fewer than the two processes' credit together, so a session often has room when it dies.
const IN_FLIGHT: usize = 12;
const KILLS: usize = 8;
const SCOPE: &str = "churn";

fn key(i: usize) -> String {
    format!("k{i}")
}

#[test]
fn killed_and_replaced_credit_workers_lose_no_set() {
    let h = Harness::broker_only();
    let mut states = vec![
        StateProcess::spawn(&h, &SETTINGS),
        StateProcess::spawn(&h, &SETTINGS),
    ];
    let client = h.client();
    wait_for("both state processes are registered", || {
        client
            .workers("org.plantd.State")
            .map(|w| w.len() == 2)
            .unwrap_or(false)
    });

    let done = Arc::new(AtomicUsize::new(0));
    let load = {
        let (endpoint, done) = (h.endpoint.clone(), done.clone());
        std::thread::spawn(move || {
            RequestLoad {
                endpoint: &endpoint,
                service: "org.plantd.State",
                total: SETS,
                in_flight: IN_FLIGHT,
                timeout: Duration::from_secs(20),
            }
            .run(
                |i| {
                    let body = json!({"service": SCOPE, "key": key(i), "value": i});
                    vec![b"state-set".to_vec(), body.to_string().into_bytes()]
                },
                |_, reply| {
                    let reply: Value = serde_json::from_slice(reply.first().ok_or("no frame")?)
                        .map_err(|e| format!("reply is not JSON: {e}"))?;
                    match reply["success"] == json!(true) {
                        true => Ok(()),
                        false => Err(format!("set failed: {reply}")),
                    }
                },
                done,
            )
        })
    };
    for kill in 0..KILLS {
        let at = SETS * (kill + 1) / (KILLS + 2);
        wait_for("the load reaches the next kill", || {
            done.load(Ordering::Relaxed) >= at || load.is_finished()
        });
        drop(states.remove(kill % 2));
        states.insert(kill % 2, StateProcess::spawn(&h, &SETTINGS));
    }
    let tally = load.join().expect("load thread");

    assert_eq!(tally.total(), SETS);
    assert_eq!(tally.timeouts, 0, "sets lost without an answer: {tally:?}");
    assert!(tally.wrong.is_empty(), "failed sets: {:?}", tally.wrong);
    for (i, error) in &tally.errors {
        assert!(
            error.contains("worker lost"),
            "request {i}: unexpected error {error}"
        );
    }
    assert_broker_balanced(&h.endpoint);

    // Every acknowledged set is there with its value.
    let acknowledged: Vec<usize> = (0..SETS)
        .filter(|i| !tally.errors.iter().any(|(failed, _)| failed == i))
        .collect();
    for chunk in acknowledged.chunks(500) {
        let keys: Vec<String> = chunk.iter().map(|&i| key(i)).collect();
        let got = data(call(
            &client,
            "state-get-many",
            &json!({"service": SCOPE, "keys": keys}),
        ));
        assert_eq!(got["missing"], json!([]), "acknowledged sets missing");
        for &i in chunk {
            assert_eq!(got["values"][key(i)], json!(i));
        }
    }
}
