//! Codec tests: exact RFC frames, round trips for every command in every dialect, every malformed
//! shape, and a randomized no-panic test.

use super::*;
use rand::{Rng, SeedableRng};

fn f(parts: &[&[u8]]) -> Vec<Frame> {
    frames_of(parts)
}

fn bytes(frames: &[Frame]) -> Vec<Vec<u8>> {
    to_vecs(frames)
}

fn enc(dialect: Dialect, direction: Direction, message: Message) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    encode(dialect, direction, message, &mut out).unwrap();
    bytes(&out)
}

fn body() -> Vec<Frame> {
    f(&[b"a", b"", b"\x00\xff\x01"])
}

// ---- exact frames from the RFCs -------------------------------------------------------------

#[test]
fn rfc18_client_request_decodes() {
    let (d, m) = decode(
        Direction::ToBroker,
        f(&[b"MDPC02", b"\x01", b"echo", b"hi", b""]),
    )
    .unwrap();
    assert_eq!(d, Dialect::V02);
    match m {
        Message::Client(ClientCommand::Request { service, body }) => {
            assert_eq!(&*service, b"echo");
            assert_eq!(bytes(&body), vec![b"hi".to_vec(), vec![]]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rfc18_worker_commands_decode() {
    let cases: Vec<(Vec<Frame>, &str)> = vec![
        (f(&[b"MDPW02", b"\x01", b"svc"]), "ready"),
        (f(&[b"MDPW02", b"\x02", b"cid", b"", b"x"]), "request"),
        (f(&[b"MDPW02", b"\x03", b"cid", b"", b"x"]), "partial"),
        (f(&[b"MDPW02", b"\x04", b"cid", b"", b"x"]), "final"),
        (f(&[b"MDPW02", b"\x05"]), "heartbeat"),
        (f(&[b"MDPW02", b"\x06"]), "disconnect"),
    ];
    for (frames, want) in cases {
        let (d, m) = decode(Direction::ToBroker, frames).unwrap();
        assert_eq!(d, Dialect::V02);
        let got = match m {
            Message::Worker(WorkerCommand::Ready {
                ref service,
                credit: 1,
            }) if &**service == b"svc" => "ready",
            Message::Worker(WorkerCommand::Request {
                ref client,
                ref body,
            }) if &**client == b"cid" && bytes(body) == vec![b"x".to_vec()] => "request",
            Message::Worker(WorkerCommand::Partial { .. }) => "partial",
            Message::Worker(WorkerCommand::Final { .. }) => "final",
            Message::Worker(WorkerCommand::Heartbeat) => "heartbeat",
            Message::Worker(WorkerCommand::Disconnect) => "disconnect",
            _ => "other",
        };
        assert_eq!(got, want);
    }
}

#[test]
fn rfc7_frames_decode() {
    // Client request as the broker sees it (REQ adds the empty frame).
    let (d, m) = decode(Direction::ToBroker, f(&[b"", b"MDPC01", b"echo", b"hi"])).unwrap();
    assert_eq!(d, Dialect::V01);
    assert!(matches!(m, Message::Client(ClientCommand::Request { .. })));
    // Reply as the client's DEALER sees it.
    let (_, m) = decode(Direction::FromBroker, f(&[b"", b"MDPC01", b"echo", b"hi"])).unwrap();
    assert!(matches!(m, Message::Client(ClientCommand::Final { .. })));
    // Worker REPLY (0x03) is a FINAL; 0x04 heartbeat, 0x05 disconnect.
    let (_, m) = decode(
        Direction::ToBroker,
        f(&[b"", b"MDPW01", b"\x03", b"cid", b"", b"ok"]),
    )
    .unwrap();
    assert!(matches!(m, Message::Worker(WorkerCommand::Final { .. })));
    let (_, m) = decode(Direction::ToBroker, f(&[b"", b"MDPW01", b"\x04"])).unwrap();
    assert!(matches!(m, Message::Worker(WorkerCommand::Heartbeat)));
    let (_, m) = decode(Direction::ToBroker, f(&[b"", b"MDPW01", b"\x05"])).unwrap();
    assert!(matches!(m, Message::Worker(WorkerCommand::Disconnect)));
}

#[test]
fn go_dialect_frames_decode() {
    let (d, m) = decode(
        Direction::ToBroker,
        f(&[b"", b"MDPC02", b"REQUEST", b"svc", b"echo", b"{}"]),
    )
    .unwrap();
    assert_eq!(d, Dialect::Go);
    assert!(matches!(m, Message::Client(ClientCommand::Request { .. })));
    // Go worker FINAL has no delimiter: the empty first body frame is body, not a delimiter.
    let (d, m) = decode(
        Direction::ToBroker,
        f(&[b"", b"MDPW02", b"FINAL", b"cid", b"", b"x"]),
    )
    .unwrap();
    assert_eq!(d, Dialect::Go);
    match m {
        Message::Worker(WorkerCommand::Final { client, body }) => {
            assert_eq!(&*client, b"cid");
            assert_eq!(bytes(&body), vec![vec![], b"x".to_vec()]);
        }
        other => panic!("{other:?}"),
    }
}

// ---- round trips --------------------------------------------------------------------------

/// A named command constructor and the direction it travels in.
type Case<C> = (&'static str, Direction, fn() -> C);

fn client_cmds() -> Vec<Case<ClientCommand>> {
    vec![
        ("request", Direction::ToBroker, || ClientCommand::Request {
            service: Frame::from("svc"),
            body: body(),
        }),
        ("partial", Direction::FromBroker, || {
            ClientCommand::Partial {
                service: Frame::from("svc"),
                body: body(),
            }
        }),
        ("final", Direction::FromBroker, || ClientCommand::Final {
            service: Frame::from("svc"),
            body: body(),
        }),
    ]
}

fn worker_cmds() -> Vec<Case<WorkerCommand>> {
    vec![
        ("ready", Direction::ToBroker, || WorkerCommand::Ready {
            service: Frame::from("svc"),
            credit: 1,
        }),
        ("ready", Direction::ToBroker, || WorkerCommand::Ready {
            service: Frame::from("svc"),
            credit: 64,
        }),
        ("request", Direction::FromBroker, || {
            WorkerCommand::Request {
                client: Frame::from("cid"),
                body: body(),
            }
        }),
        ("partial", Direction::ToBroker, || WorkerCommand::Partial {
            client: Frame::from("cid"),
            body: body(),
        }),
        ("final", Direction::ToBroker, || WorkerCommand::Final {
            client: Frame::from("cid"),
            body: body(),
        }),
        ("heartbeat", Direction::ToBroker, || {
            WorkerCommand::Heartbeat
        }),
        ("heartbeat", Direction::FromBroker, || {
            WorkerCommand::Heartbeat
        }),
        ("disconnect", Direction::ToBroker, || {
            WorkerCommand::Disconnect
        }),
        ("disconnect", Direction::FromBroker, || {
            WorkerCommand::Disconnect
        }),
    ]
}

fn describe(m: &Message) -> (String, Vec<Vec<u8>>) {
    match m {
        Message::Client(ClientCommand::Request { service, body }) => (
            "request".into(),
            [vec![service.to_vec()], bytes(body)].concat(),
        ),
        Message::Client(ClientCommand::Partial { service, body }) => (
            "partial".into(),
            [vec![service.to_vec()], bytes(body)].concat(),
        ),
        Message::Client(ClientCommand::Final { service, body }) => (
            "final".into(),
            [vec![service.to_vec()], bytes(body)].concat(),
        ),
        Message::Worker(WorkerCommand::Ready { service, credit }) => (
            "ready".into(),
            vec![service.to_vec(), credit.to_string().into_bytes()],
        ),
        Message::Worker(WorkerCommand::Request { client, body }) => (
            "request".into(),
            [vec![client.to_vec()], bytes(body)].concat(),
        ),
        Message::Worker(WorkerCommand::Partial { client, body }) => (
            "partial".into(),
            [vec![client.to_vec()], bytes(body)].concat(),
        ),
        Message::Worker(WorkerCommand::Final { client, body }) => (
            "final".into(),
            [vec![client.to_vec()], bytes(body)].concat(),
        ),
        Message::Worker(WorkerCommand::Heartbeat) => ("heartbeat".into(), vec![]),
        Message::Worker(WorkerCommand::Disconnect) => ("disconnect".into(), vec![]),
    }
}

#[test]
fn every_command_round_trips_in_every_dialect() {
    let mut checked = 0;
    for dialect in [Dialect::V01, Dialect::V02, Dialect::Go] {
        for (name, direction, make) in client_cmds() {
            let mut out = Vec::new();
            let res = encode(dialect, direction, Message::Client(make()), &mut out);
            if dialect == Dialect::V01 && name == "partial" {
                assert!(matches!(res, Err(ProtocolError::Unsupported { .. })));
                continue;
            }
            res.unwrap();
            let (d, m) = decode(direction, out).unwrap();
            assert_eq!(d, dialect, "{name}");
            assert_eq!(
                describe(&m),
                describe(&Message::Client(make())),
                "{dialect:?} {name}"
            );
            checked += 1;
        }
        for (name, direction, make) in worker_cmds() {
            let mut out = Vec::new();
            let res = encode(dialect, direction, Message::Worker(make()), &mut out);
            if dialect == Dialect::V01 && name == "partial" {
                assert!(matches!(res, Err(ProtocolError::Unsupported { .. })));
                continue;
            }
            res.unwrap();
            let (d, m) = decode(direction, out).unwrap();
            assert_eq!(d, dialect, "{name}");
            assert_eq!(
                describe(&m),
                describe(&Message::Worker(make())),
                "{dialect:?} {name}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * 12 - 2);
}

#[test]
fn ready_carries_credit_only_above_one() {
    let ready = |credit| {
        Message::Worker(WorkerCommand::Ready {
            service: Frame::from("s"),
            credit,
        })
    };
    assert_eq!(
        enc(Dialect::V02, Direction::ToBroker, ready(1)),
        vec![b"MDPW02".to_vec(), vec![1], b"s".to_vec()],
        "credit 1 is plain 18/MDP"
    );
    assert_eq!(
        enc(Dialect::V01, Direction::ToBroker, ready(32)),
        vec![
            vec![],
            b"MDPW01".to_vec(),
            vec![1],
            b"s".to_vec(),
            b"credit=32".to_vec()
        ]
    );
    let (_, decoded) = decode(
        Direction::ToBroker,
        f(&[b"", b"MDPW02", b"READY", b"s", b"credit=7"]),
    )
    .unwrap();
    assert!(matches!(
        decoded,
        Message::Worker(WorkerCommand::Ready { credit: 7, .. })
    ));
    let mut out = Vec::new();
    assert_eq!(
        encode(Dialect::V02, Direction::ToBroker, ready(0), &mut out),
        Err(ProtocolError::InvalidCredit)
    );
}

#[test]
fn encodes_exact_wire_frames() {
    let req = || {
        Message::Client(ClientCommand::Request {
            service: Frame::from("s"),
            body: f(&[b"x"]),
        })
    };
    assert_eq!(
        enc(Dialect::V02, Direction::ToBroker, req()),
        vec![b"MDPC02".to_vec(), vec![1], b"s".to_vec(), b"x".to_vec()]
    );
    assert_eq!(
        enc(Dialect::V01, Direction::ToBroker, req()),
        vec![vec![], b"MDPC01".to_vec(), b"s".to_vec(), b"x".to_vec()]
    );
    assert_eq!(
        enc(Dialect::Go, Direction::ToBroker, req()),
        vec![
            vec![],
            b"MDPC02".to_vec(),
            b"REQUEST".to_vec(),
            b"s".to_vec(),
            b"x".to_vec()
        ]
    );
    let fin = || {
        Message::Client(ClientCommand::Final {
            service: Frame::from("s"),
            body: f(&[b"x"]),
        })
    };
    assert_eq!(
        enc(Dialect::Go, Direction::FromBroker, fin()),
        vec![
            b"MDPC02".to_vec(),
            b"FINAL".to_vec(),
            b"s".to_vec(),
            b"x".to_vec()
        ]
    );
    assert_eq!(
        enc(Dialect::V02, Direction::FromBroker, fin()),
        vec![b"MDPC02".to_vec(), vec![3], b"s".to_vec(), b"x".to_vec()]
    );
    let wfin = || {
        Message::Worker(WorkerCommand::Final {
            client: Frame::from("c"),
            body: f(&[b"x"]),
        })
    };
    assert_eq!(
        enc(Dialect::V02, Direction::ToBroker, wfin()),
        vec![
            b"MDPW02".to_vec(),
            vec![4],
            b"c".to_vec(),
            vec![],
            b"x".to_vec()
        ]
    );
    assert_eq!(
        enc(Dialect::V01, Direction::ToBroker, wfin()),
        vec![
            vec![],
            b"MDPW01".to_vec(),
            vec![3],
            b"c".to_vec(),
            vec![],
            b"x".to_vec()
        ]
    );
    assert_eq!(
        enc(Dialect::Go, Direction::ToBroker, wfin()),
        vec![
            vec![],
            b"MDPW02".to_vec(),
            b"FINAL".to_vec(),
            b"c".to_vec(),
            b"x".to_vec()
        ]
    );
    let hb = enc(
        Dialect::Go,
        Direction::FromBroker,
        Message::Worker(WorkerCommand::Heartbeat),
    );
    assert_eq!(hb, vec![b"MDPW02".to_vec(), b"HEARTBEAT".to_vec()]);
}

// ---- malformed shapes ---------------------------------------------------------------------

#[test]
fn every_malformed_shape_is_a_typed_error() {
    use ProtocolError::*;
    let cases: Vec<(Vec<Frame>, ProtocolError)> = vec![
        (vec![], Empty),
        (f(&[b""]), Empty),
        (f(&[b"HELLO"]), UnknownHeader),
        (f(&[b"MDPC02"]), MissingCommand),
        (
            f(&[b"MDPC02", b"\x09", b"svc"]),
            UnknownCommand("MDP/0.2 client"),
        ),
        (f(&[b"MDPC02", b"\x01"]), MissingService),
        (f(&[b"MDPC02", b"\x01", b""]), MissingService),
        (f(&[b"", b"MDPC01"]), MissingService),
        (f(&[b"MDPW02"]), MissingCommand),
        (f(&[b"MDPW02", b"\x07"]), UnknownCommand("MDP/0.2 worker")),
        (f(&[b"MDPW02", b"JUNK"]), UnknownCommand("MDP/0.2 worker")),
        (f(&[b"MDPW02", b"\x01"]), MissingService),
        (f(&[b"MDPW02", b"\x01", b"svc", b"extra"]), InvalidCredit),
        (f(&[b"MDPW02", b"\x01", b"svc", b"credit=0"]), InvalidCredit),
        (
            f(&[b"MDPW02", b"\x01", b"svc", b"credit=2", b"extra"]),
            TrailingFrames("READY"),
        ),
        (f(&[b"MDPW02", b"\x05", b"x"]), TrailingFrames("HEARTBEAT")),
        (f(&[b"MDPW02", b"\x04"]), MissingClientAddress),
        (f(&[b"MDPW02", b"\x04", b""]), MissingClientAddress),
        (f(&[b"MDPW02", b"\x04", b"cid"]), MissingDelimiter),
        (
            f(&[b"MDPW02", b"\x04", b"cid", b"notempty"]),
            MissingDelimiter,
        ),
        (
            f(&[b"", b"MDPW01", b"\x09"]),
            UnknownCommand("MDP/0.1 worker"),
        ),
        (f(&[b"", b"MDPW02", b"FINAL"]), MissingClientAddress),
        (f(&[b"", b"MDPW02", b"READY"]), MissingService),
    ];
    for (frames, want) in cases {
        let shown = bytes(&frames);
        assert_eq!(
            decode(Direction::ToBroker, frames).unwrap_err(),
            want,
            "{shown:?}"
        );
    }
    assert_eq!(decode_routed(vec![]).unwrap_err(), MissingRoutingId);
}

#[test]
fn error_reply_round_trips() {
    let body = ErrorReply::body(ErrorCode::QueueFull, "queue full");
    let parsed = ErrorReply::parse(&body).unwrap();
    assert_eq!(parsed.code, "503");
    assert_eq!(parsed.message, "queue full");
    assert_eq!(
        ErrorCode::parse(parsed.code.as_bytes()),
        Some(ErrorCode::QueueFull)
    );
    assert!(ErrorReply::parse(&f(&[b"hello"])).is_none());
}

// ---- randomized -----------------------------------------------------------------------------

fn random_frame(rng: &mut impl Rng) -> Vec<u8> {
    const INTERESTING: &[&[u8]] = &[
        b"",
        b"MDPC01",
        b"MDPC02",
        b"MDPW01",
        b"MDPW02",
        b"\x01",
        b"\x02",
        b"\x03",
        b"\x04",
        b"\x05",
        b"\x06",
        b"READY",
        b"REQUEST",
        b"PARTIAL",
        b"FINAL",
        b"HEARTBEAT",
        b"DISCONNECT",
    ];
    if rng.gen_bool(0.5) {
        INTERESTING[rng.gen_range(0..INTERESTING.len())].to_vec()
    } else {
        let len = rng.gen_range(0..12);
        (0..len).map(|_| rng.gen()).collect()
    }
}

#[test]
fn hundred_thousand_random_messages_never_panic() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut decoded = 0usize;
    for i in 0..100_000 {
        let frames: Vec<Vec<u8>> = if i % 2 == 0 {
            let n = rng.gen_range(0..8);
            (0..n).map(|_| random_frame(&mut rng)).collect()
        } else {
            // Mutate a valid message: drop, duplicate, replace or truncate a frame.
            let dialect = [Dialect::V01, Dialect::V02, Dialect::Go][rng.gen_range(0..3)];
            let (_, direction, make) = worker_cmds()[rng.gen_range(0..8)];
            let mut out = Vec::new();
            let _ = encode(dialect, direction, Message::Worker(make()), &mut out);
            let mut v = bytes(&out);
            if !v.is_empty() {
                let at = rng.gen_range(0..v.len());
                match rng.gen_range(0..4) {
                    0 => {
                        v.remove(at);
                    }
                    1 => v.insert(at, v[at].clone()),
                    2 => v[at] = random_frame(&mut rng),
                    _ => v.truncate(at),
                }
            }
            v
        };
        let direction = if rng.gen_bool(0.5) {
            Direction::ToBroker
        } else {
            Direction::FromBroker
        };
        if decode(direction, frames_of(&frames)).is_ok() {
            decoded += 1;
        }
        let _ = decode_routed(frames_of(&frames));
    }
    // Some mutations stay valid, most do not; both paths were exercised.
    assert!(decoded > 1_000 && decoded < 99_000, "decoded {decoded}");
}
