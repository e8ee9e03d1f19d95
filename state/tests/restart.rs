//! Issue test 2: 1,000 scopes survive a restart (the Go service deadlocked at startup with more
//! than 20), and a set on a new scope works afterwards.

mod common;

use common::{call, data, Harness};
use serde_json::json;

#[test]
fn a_thousand_scopes_survive_a_restart() {
    let mut h = Harness::start();
    std::thread::scope(|s| {
        for t in 0..8 {
            let client = h.client();
            s.spawn(move || {
                for i in (t..1000).step_by(8) {
                    let scope = format!("scope-{i:04}");
                    data(call(&client, "create-scope", &json!({"service": scope})));
                    data(call(
                        &client,
                        "set",
                        &json!({"service": scope, "key": "n", "value": i}),
                    ));
                }
            });
        }
    });
    h.stop_state();
    h.start_state();

    let scopes = data(h.call("list-scopes", json!({})));
    assert_eq!(scopes["count"], json!(1000));
    assert_eq!(scopes["scopes"][0], json!("scope-0000"));
    assert_eq!(scopes["scopes"][999], json!("scope-0999"));
    for i in [0, 1, 500, 999] {
        let got = data(h.call(
            "get",
            json!({"service": format!("scope-{i:04}"), "key": "n"}),
        ));
        assert_eq!(got["value"], json!(i));
    }
    data(h.call(
        "set",
        json!({"service": "brand-new", "key": "k", "value": "v"}),
    ));
    assert_eq!(
        data(h.call("get", json!({"service": "brand-new", "key": "k"})))["value"],
        json!("v")
    );
    assert_eq!(data(h.call("list-scopes", json!({})))["count"], json!(1001));
}
