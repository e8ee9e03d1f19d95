//! Waking a thread that sleeps in `zmq::poll` from any other thread.
//!
//! A zmq socket belongs to one thread, so threads that own sockets (worker sessions, the async
//! client's I/O thread) take work from plain channels and use an inproc PAIR pair as a doorbell:
//! producers push onto the channel, then ring the bell; the owner polls its sockets *and* the bell.
//! A bell that has rung and not been answered yet is not rung again: under load, producers push
//! many messages per wake-up, and each ring is a libzmq send (and often an eventfd write).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The polling side: owned by the thread that sleeps in `zmq::poll`.
pub struct Doorbell {
    socket: zmq::Socket,
    rung: Arc<AtomicBool>,
}

/// The ringing side: cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Waker {
    socket: Arc<Mutex<zmq::Socket>>,
    /// Set by the first ring after the owner's last [`Doorbell::drain`].
    rung: Arc<AtomicBool>,
}

impl Doorbell {
    /// A connected doorbell/waker pair on a fresh inproc endpoint of `context`.
    pub fn new(context: &zmq::Context) -> zmq::Result<(Doorbell, Waker)> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let endpoint = format!(
            "inproc://plantd-wake-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let receiver = context.socket(zmq::PAIR)?;
        receiver.set_linger(0)?;
        receiver.bind(&endpoint)?;
        let sender = context.socket(zmq::PAIR)?;
        sender.set_linger(0)?;
        sender.connect(&endpoint)?;
        let rung = Arc::new(AtomicBool::new(false));
        Ok((
            Doorbell {
                socket: receiver,
                rung: Arc::clone(&rung),
            },
            Waker {
                socket: Arc::new(Mutex::new(sender)),
                rung,
            },
        ))
    }

    /// The poll item to include in `zmq::poll`.
    pub fn as_poll_item(&self) -> zmq::PollItem<'_> {
        self.socket.as_poll_item(zmq::POLLIN)
    }

    /// Consumes every pending ring, so the next poll sleeps until a new one. Call it before
    /// taking work off the channel: a message pushed after that point rings again.
    pub fn drain(&self) {
        let mut msg = zmq::Message::new();
        while self.socket.recv(&mut msg, zmq::DONTWAIT).is_ok() {}
        // Only now: a ring whose message was just consumed must not keep the next one silent.
        // (A ring after the last receive but before this store skipped its send; its work was
        // pushed before it rang, and this swap reads that ring, so the caller's next look at the
        // channel finds the work.)
        self.rung.swap(false, Ordering::SeqCst);
    }

    /// Sleeps until the bell rings or `timeout` passes.
    pub fn wait(&self, timeout: std::time::Duration) {
        let mut items = [self.as_poll_item()];
        let _ = zmq::poll(&mut items, millis_ceil(timeout));
        self.drain();
    }
}

impl Waker {
    /// Rings the bell. Never blocks: if the pipe is full, the owner has unread rings and will wake
    /// anyway.
    pub fn wake(&self) {
        // Rung since the owner last drained: the owner will wake and look at the channel anyway.
        if self.rung.swap(true, Ordering::SeqCst) {
            return;
        }
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        let _ = socket.send(zmq::Message::new(), zmq::DONTWAIT);
    }
}

/// A poll timeout in whole milliseconds, rounded up so a sub-millisecond wait never spins.
pub fn millis_ceil(d: std::time::Duration) -> i64 {
    let ms = d.as_micros().div_ceil(1000);
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Producers on several threads push work and ring; the owner drains the bell, then takes
    /// the work, and only sleeps in `poll`. A lost wake-up leaves work on the channel while the
    /// owner sleeps: the poll's long timeout then fires, which fails the test.
    #[test]
    fn no_ring_is_lost_however_rings_and_drains_interleave() {
        const PRODUCERS: u64 = 4;
        const ITEMS: u64 = 20_000;
        let context = zmq::Context::new();
        let (doorbell, waker) = Doorbell::new(&context).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<u64>();
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|_| {
                let (tx, waker) = (tx.clone(), waker.clone());
                std::thread::spawn(move || {
                    for i in 0..ITEMS {
                        tx.send(i).unwrap();
                        waker.wake();
                        if i % 64 == 0 {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let mut received = 0;
        while received < PRODUCERS * ITEMS {
            let mut items = [doorbell.as_poll_item()];
            let woken = zmq::poll(&mut items, 10_000).unwrap();
            assert!(
                woken > 0 || rx.try_recv().is_err(),
                "work waited on the channel while the bell stayed silent ({received} taken)"
            );
            doorbell.drain();
            received += rx.try_iter().count() as u64;
        }
        for producer in producers {
            producer.join().unwrap();
        }
    }
}
