//! Temporary sanity check of broker throughput (to be replaced by the benchmark issue).
use plantd_worker_sdk::protocol::{
    self, ClientCommand, Dialect, Direction, Frame, Message, WorkerCommand,
};
use std::time::{Duration, Instant};

fn main() {
    let port = plantd_worker_sdk::testing::free_port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let mut config = plantd_broker::BrokerConfig {
        endpoint: endpoint.clone(),
        health_port: plantd_worker_sdk::testing::free_port(),
        health_host: "127.0.0.1".into(),
        ..Default::default()
    };
    config.bus.enabled = false;
    let shutdown = plantd_worker_sdk::Shutdown::new();
    let tok = shutdown.clone();
    let bt = std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(plantd_broker::run(config, tok))
    });
    std::thread::sleep(Duration::from_millis(300));
    let ctx = zmq::Context::new();
    let workers: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    for _ in 0..workers {
        let ctx = ctx.clone();
        let ep = endpoint.clone();
        std::thread::spawn(move || {
            let s = ctx.socket(zmq::DEALER).unwrap();
            s.connect(&ep).unwrap();
            let mut out = Vec::new();
            protocol::encode(
                Dialect::V02,
                Direction::ToBroker,
                Message::Worker(WorkerCommand::Ready {
                    service: Frame::from("echo"),
                }),
                &mut out,
            )
            .unwrap();
            protocol::send_frames(&s, out, 0).unwrap();
            loop {
                let f = protocol::recv_frames(&s, 0).unwrap();
                if let Ok((_, Message::Worker(WorkerCommand::Request { client, body }))) =
                    protocol::decode(Direction::FromBroker, f)
                {
                    let mut out = Vec::new();
                    protocol::encode(
                        Dialect::V02,
                        Direction::ToBroker,
                        Message::Worker(WorkerCommand::Final { client, body }),
                        &mut out,
                    )
                    .unwrap();
                    protocol::send_frames(&s, out, 0).unwrap();
                }
            }
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    let clients = 4;
    let per = 50_000;
    let window = 50;
    let start = Instant::now();
    let hs: Vec<_> = (0..clients)
        .map(|_| {
            let ctx = ctx.clone();
            let ep = endpoint.clone();
            std::thread::spawn(move || {
                let s = ctx.socket(zmq::DEALER).unwrap();
                s.connect(&ep).unwrap();
                let send = |s: &zmq::Socket| {
                    let mut out = Vec::new();
                    protocol::encode(
                        Dialect::V02,
                        Direction::ToBroker,
                        Message::Client(ClientCommand::Request {
                            service: Frame::from("echo"),
                            body: vec![Frame::from(&[7u8; 100][..])],
                        }),
                        &mut out,
                    )
                    .unwrap();
                    protocol::send_frames(s, out, 0).unwrap();
                };
                let mut sent = 0;
                let mut got = 0;
                while sent < window {
                    send(&s);
                    sent += 1;
                }
                while got < per {
                    protocol::recv_frames(&s, 0).unwrap();
                    got += 1;
                    if sent < per {
                        send(&s);
                        sent += 1;
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let el = start.elapsed();
    println!(
        "{} requests in {:?}: {:.0} req/s",
        clients * per,
        el,
        (clients * per) as f64 / el.as_secs_f64()
    );
    shutdown.cancel();
    let _ = bt.join();
    std::process::exit(0);
}
