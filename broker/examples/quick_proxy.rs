//! Temporary: bare ROUTER<->DEALER proxy with the same load shape as quick_throughput.
use std::time::{Duration, Instant};
fn main() {
    let ctx = zmq::Context::new();
    let fp = plantd_worker_sdk::testing::free_port();
    let bp = plantd_worker_sdk::testing::free_port();
    let fe = format!("tcp://127.0.0.1:{fp}");
    let be = format!("tcp://127.0.0.1:{bp}");
    {
        let ctx = zmq::Context::new();
        let fe = fe.clone();
        let be = be.clone();
        std::thread::spawn(move || {
            let f = ctx.socket(zmq::ROUTER).unwrap();
            f.bind(&fe).unwrap();
            let b = ctx.socket(zmq::DEALER).unwrap();
            b.bind(&be).unwrap();
            zmq::proxy(&f, &b).unwrap();
        });
    }
    let workers: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    for _ in 0..workers {
        let ctx = ctx.clone();
        let be = be.clone();
        std::thread::spawn(move || {
            let s = ctx.socket(zmq::REP).unwrap();
            s.connect(&be).unwrap();
            loop {
                let m = s.recv_multipart(0).unwrap();
                s.send_multipart(m, 0).unwrap();
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
            let fe = fe.clone();
            std::thread::spawn(move || {
                let s = ctx.socket(zmq::DEALER).unwrap();
                s.connect(&fe).unwrap();
                let send = |s: &zmq::Socket| {
                    s.send_multipart([&b""[..], &b"echo"[..], &[7u8; 100][..]], 0)
                        .unwrap()
                };
                let mut sent = 0;
                let mut got = 0;
                while sent < window {
                    send(&s);
                    sent += 1;
                }
                while got < per {
                    s.recv_multipart(0).unwrap();
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
        "proxy: {} requests in {:?}: {:.0} req/s",
        clients * per,
        el,
        (clients * per) as f64 / el.as_secs_f64()
    );
    std::process::exit(0);
}
