//! Issue test 3: 64 concurrent clients doing mixed sets and gets. Every reply is checked, and the
//! final contents are exactly what the clients wrote. The same load runs against the default
//! sessions and against one session holding many requests (credit), whose requests run in
//! parallel.

mod common;

use common::{call, data, Backend, Harness};
use serde_json::json;

const CLIENTS: usize = 64;
const ROUNDS: usize = 40;
const KEYS: usize = 5;

#[test]
fn sixty_four_clients_mixed_sets_and_gets() {
    mixed_sets_and_gets(&Harness::start());
}

#[test]
fn sixty_four_clients_mixed_sets_and_gets_on_postgres() {
    if let Some(h) = Harness::start_on(Backend::Postgres) {
        mixed_sets_and_gets(&h);
    }
}

#[test]
fn one_session_with_credit_serves_sixty_four_clients() {
    let mut h = Harness::broker_only();
    h.state_config.concurrency = 1;
    h.state_config.credit = 16;
    h.start_state();
    let workers = h.client().workers("org.plantd.State").unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].credit, 16);
    mixed_sets_and_gets(&h);
}

fn mixed_sets_and_gets(h: &Harness) {
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let client = h.client();
            s.spawn(move || {
                // Each client owns its keys in a shared scope and in one of its own, and checks
                // every read against what it last wrote.
                let own_scope = format!("client-{c}");
                let mut last = vec![None; KEYS];
                for round in 0..ROUNDS {
                    let k = round % KEYS;
                    let key = format!("c{c}-k{k}");
                    let value = json!({"client": c, "round": round});
                    let reply = data(call(
                        &client,
                        "state-set",
                        &json!({"service": "shared", "key": key, "value": value}),
                    ));
                    assert_eq!(reply["value"], value);
                    last[k] = Some(value);
                    let probe = (round * 7 + c) % KEYS;
                    let key = format!("c{c}-k{probe}");
                    let reply = call(
                        &client,
                        "state-get",
                        &json!({"service": "shared", "key": key}),
                    );
                    match &last[probe] {
                        Some(expected) => assert_eq!(data(reply)["value"], *expected),
                        None => assert_eq!(common::code(&reply), "KEY_NOT_FOUND"),
                    }
                    if round % 10 == 0 {
                        data(call(
                            &client,
                            "set",
                            &json!({"service": own_scope, "key": "round", "value": round}),
                        ));
                    }
                }
            });
        }
    });

    let shared = data(h.call("list-keys", json!({"service": "shared"})));
    assert_eq!(shared["count"], json!(CLIENTS * KEYS));
    for c in 0..CLIENTS {
        let keys: Vec<String> = (0..KEYS).map(|k| format!("c{c}-k{k}")).collect();
        let got = data(h.call("state-get-many", json!({"service": "shared", "keys": keys})));
        assert_eq!(got["missing"], json!([]));
        for k in 0..KEYS {
            // The last round that wrote key k.
            let round = (0..ROUNDS).filter(|r| r % KEYS == k).max().unwrap();
            assert_eq!(
                got["values"][format!("c{c}-k{k}")],
                json!({"client": c, "round": round})
            );
        }
        let own = data(h.call(
            "get",
            json!({"service": format!("client-{c}"), "key": "round"}),
        ));
        assert_eq!(own["value"], json!(30));
    }
    assert_eq!(
        data(h.call("list-scopes", json!({})))["count"],
        json!(CLIENTS + 1)
    );
}
