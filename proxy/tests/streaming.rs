//! Streaming: with `Accept: text/event-stream`, each PARTIAL of an MDP/0.2 worker is an SSE event
//! as soon as the worker sends it, and the FINAL is the last event.

mod common;

use std::sync::mpsc;
use std::sync::Mutex;

use common::{SseReader, System};
use plantd_worker_sdk::{Frames, Responder, Worker};
use serde_json::json;

#[test]
fn partials_arrive_as_sse_events_when_sent_and_the_final_is_last() {
    let mut s = System::new();
    // The worker sends partial i, then waits until the test lets it go on: the test sees each
    // event before the next partial even exists.
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go = Mutex::new(go_rx);
    s.start_worker(Worker::builder("test.Stream").streaming_handler(
        move |body: Frames, out: &Responder| {
            let go = go.lock().unwrap();
            for i in 1..=3 {
                out.partial(vec![
                    b"part".to_vec(),
                    json!({"part": i}).to_string().into_bytes(),
                ])?;
                go.recv()
                    .map_err(|_| plantd_worker_sdk::HandlerError::new("test gone"))?;
            }
            Ok(body)
        },
    ));
    s.start_proxy();

    let response = s
        .http
        .post(s.url("/api/v1/services/test.Stream/run"))
        .header("accept", "text/event-stream")
        .json(&json!({"done": true}))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut events = SseReader::new(response);
    for i in 1..=3 {
        let event = events.next_event().expect("a partial");
        assert_eq!(event.event, "partial");
        assert_eq!(event.data, json!({"part": i}));
        // Only now may the worker go on to the next partial (or the final).
        go_tx.send(()).unwrap();
    }
    let last = events.next_event().expect("the final");
    assert_eq!(last.event, "final");
    assert_eq!(last.data, json!({"done": true}));
    assert_eq!(events.next_event(), None, "the stream ends after the final");
}

#[test]
fn without_sse_the_response_is_the_final() {
    let mut s = System::new();
    s.start_worker(Worker::builder("test.Stream").streaming_handler(
        |body: Frames, out: &Responder| {
            out.partial(vec![b"{\"part\":1}".to_vec()])?;
            Ok(body)
        },
    ));
    s.start_proxy();
    let (status, reply) = s.post(
        "/api/v1/services/test.Stream/run",
        json!({"final": true}),
        None,
    );
    assert_eq!((status, reply), (200, json!({"final": true})));
}
