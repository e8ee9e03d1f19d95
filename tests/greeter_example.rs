//! The README's worker, `examples/greeter.rs`, as a user runs it: the built example against a real
//! broker (a `plantd up` on free ports), one request answered, a handler error reported, and a
//! clean exit on Ctrl-C (SIGINT).

mod common;

use std::time::Duration;

use common::{example_binary, isolated, Background, Plantd};
use plantd_worker_sdk::testing::wait_until;
use plantd_worker_sdk::{Client, ClientError};

#[test]
fn the_greeter_example_answers_a_request_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let plantd = Plantd::start(dir.path(), &[], &[]);
    let mut greeter = Background::new(
        isolated(example_binary("greeter"), dir.path())
            .env("PLANTD_GREETER_BROKER_ENDPOINT", &plantd.endpoint)
            .spawn()
            .expect("the example starts"),
        "the greeter",
    );
    let client = Client::connect(&plantd.endpoint)
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    wait_until("the greeter is registered", || {
        client
            .service_available("org.example.Greeter")
            .unwrap_or(false)
    });
    let reply = client
        .request("org.example.Greeter", vec![b"world".to_vec()])
        .unwrap();
    assert_eq!(reply, vec![b"hello world".to_vec()]);
    match client.request("org.example.Greeter", Vec::new()) {
        Err(ClientError::Worker(message)) => assert_eq!(message, "send a name"),
        other => panic!("expected the handler's error, got {other:?}"),
    }

    let status = greeter.interrupt();
    assert!(status.success(), "the greeter exited with {status}");
}
