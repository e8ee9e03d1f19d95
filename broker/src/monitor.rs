//! Connections of the MDP socket, from libzmq's socket monitor: how many are open, how many were
//! accepted, and how many ended.
//!
//! A connection ends when its peer closes it or when libzmq drops it: a frame larger than
//! `max_message_size` (libzmq refuses it from its size header, before reading it), or another
//! ZMTP error. libzmq 4.3 reports all of these as the same `DISCONNECTED` event with no reason
//! (`v2_decoder_t::size_ready` fails with `EMSGSIZE`, and the engine then only emits
//! `DISCONNECTED`), so the counter cannot single out oversized frames; a peer that keeps its
//! socket open yet shows up as a disconnect was dropped by libzmq.
//!
//! The events are read on a thread of their own, so the broker loop is untouched. The libzmq
//! issue #3575 precautions of `worker_sdk::bus::monitor` apply: libzmq sends events with a
//! blocking send, so the reading PAIR has no queue limit and stays open until libzmq has stopped
//! monitoring, which [`stop`] does right before the ROUTER closes (in `Wire`'s drop); the reading
//! thread ends on the `MONITOR_STOPPED` event that follows.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use prometheus::{IntCounter, IntGauge};

/// How often the reading thread looks at its stop flag (only a fallback: it normally ends on
/// `MONITOR_STOPPED`).
const POLL_MS: i64 = 500;

/// The metric handles the monitor updates.
#[derive(Clone)]
pub struct ConnectionMetrics {
    /// Open connections.
    pub open: IntGauge,
    /// Connections accepted.
    pub accepted: IntCounter,
    /// Connections that ended, for any reason.
    pub disconnects: IntCounter,
}

/// The thread reading a socket's connection events.
pub struct ConnectionMonitor {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl ConnectionMonitor {
    /// Starts monitoring `socket` (before it binds, so no connection is missed) and a thread
    /// that counts its events into `metrics`. The socket's owner must call [`stop`] before
    /// closing it.
    pub fn attach(
        context: &zmq::Context,
        socket: &zmq::Socket,
        metrics: ConnectionMetrics,
    ) -> Result<Self, zmq::Error> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let address = format!(
            "inproc://plantd-broker-monitor-{}",
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let events = zmq::SocketEvent::ACCEPTED.to_raw()
            | zmq::SocketEvent::DISCONNECTED.to_raw()
            | zmq::SocketEvent::MONITOR_STOPPED.to_raw();
        socket.monitor(&address, i32::from(events))?;
        let reader = context.socket(zmq::PAIR)?;
        // No queue limit (set before connecting, when libzmq sizes the inproc pipe): with one, a
        // burst of events would block libzmq's I/O thread (module docs).
        reader.set_rcvhwm(0)?;
        reader.set_linger(0)?;
        reader.connect(&address)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("plantd-broker-monitor".into())
            .spawn(move || read_events(&reader, &metrics, &flag))
            .map_err(|_| zmq::Error::ENOMEM)?;
        Ok(ConnectionMonitor {
            thread: Some(thread),
            stop,
        })
    }

    /// Waits for the reading thread, once the monitored socket is closed.
    pub fn join(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ConnectionMonitor {
    fn drop(&mut self) {
        // Not joined: dropping without `join` happens only when startup failed, and the thread
        // ends by itself on MONITOR_STOPPED or its stop flag.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Stops libzmq's monitor of `socket`, if any; call it from the socket's owner right before the
/// socket closes. Afterwards libzmq sends no more events.
pub fn stop(socket: &mut zmq::Socket) {
    // SAFETY: `socket` is a live socket, used from its owner's thread; a NULL endpoint is
    // libzmq's documented way to stop monitoring (a no-op without a monitor).
    unsafe {
        zmq_sys::zmq_socket_monitor(socket.as_mut_ptr(), std::ptr::null(), 0);
    }
}

fn read_events(reader: &zmq::Socket, metrics: &ConnectionMetrics, stop: &AtomicBool) {
    loop {
        match reader.poll(zmq::POLLIN, POLL_MS) {
            Ok(n) if n > 0 => {}
            Ok(_) if stop.load(Ordering::Relaxed) => return,
            Ok(_) => continue,
            Err(_) => return,
        }
        while let Ok(frames) = reader.recv_multipart(zmq::DONTWAIT) {
            let Some(id) = plantd_worker_sdk::monitor::event_id(&frames) else {
                continue;
            };
            if id == zmq::SocketEvent::ACCEPTED.to_raw() {
                metrics.accepted.inc();
                metrics.open.inc();
            } else if id == zmq::SocketEvent::DISCONNECTED.to_raw() {
                metrics.disconnects.inc();
                metrics.open.dec();
            } else if id == zmq::SocketEvent::MONITOR_STOPPED.to_raw() {
                return;
            }
        }
    }
}
