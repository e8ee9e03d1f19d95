//! Sending on the broker's ROUTER socket: one reusable frame buffer, non-blocking sends, and the
//! replies the broker composes itself (relayed FINALs, error replies, DISCONNECTs).
//!
//! Every send is `DONTWAIT` on a `ROUTER_MANDATORY` socket, so a peer that is gone
//! (`EHOSTUNREACH`) or not reading (`EAGAIN`) costs one failed call instead of a silent drop or a
//! stalled broker. Callers decide what a failure means (a dead worker, a lost reply).

use plantd_worker_sdk::protocol::{
    self, ClientCommand, Direction, ErrorCode, ErrorReply, Frame, Message, WorkerCommand,
};

use crate::metrics::Metrics;
use crate::request::{start_message, start_tagged, ReturnAddress};

/// The ROUTER socket and its outgoing-message buffer.
pub struct Wire {
    socket: zmq::Socket,
    /// The message being assembled; reused so sending allocates nothing per message.
    pub out: Vec<Frame>,
    metrics: Metrics,
}

impl Drop for Wire {
    fn drop(&mut self) {
        // The socket's connection monitor must stop before the socket closes (libzmq #3575; see
        // `crate::monitor`). The socket field closes right after this.
        crate::monitor::stop(&mut self.socket);
    }
}

impl Wire {
    /// Wraps a bound ROUTER socket.
    pub fn new(socket: zmq::Socket, metrics: Metrics) -> Self {
        Wire {
            socket,
            out: Vec::with_capacity(16),
            metrics,
        }
    }

    /// The socket, for polling.
    pub fn socket(&self) -> &zmq::Socket {
        &self.socket
    }

    /// Sends the assembled message in [`Wire::out`], leaving the buffer empty either way.
    pub fn send(&mut self) -> Result<(), zmq::Error> {
        let last = self.out.len().saturating_sub(1);
        let socket = self.socket.as_mut_ptr();
        for (i, frame) in self.out.drain(..).enumerate() {
            let flags = if i < last {
                zmq::DONTWAIT | zmq::SNDMORE
            } else {
                zmq::DONTWAIT
            };
            // With ROUTER_MANDATORY only the routing-id frame can fail (unknown peer or full
            // pipe), and then nothing of the message has been queued.
            crate::frame::send(socket, frame, flags)?;
        }
        self.metrics.messages_sent.inc();
        Ok(())
    }

    /// Sends `body` as a FINAL for `service` to `client`. A gone client is counted, not an error.
    pub fn reply(&mut self, client: ReturnAddress, service: Frame, body: Vec<Frame>) {
        let dialect = client.dialect;
        start_tagged(
            &mut self.out,
            client.id,
            client.tag,
            dialect,
            client.envelope,
        );
        let final_reply = Message::Client(ClientCommand::Final { service, body });
        if protocol::encode(dialect, Direction::FromBroker, final_reply, &mut self.out).is_err()
            || self.send().is_err()
        {
            self.out.clear();
            self.metrics.unroutable.inc();
        }
    }

    /// Sends the error reply `["plantd.error", code, message]` to `client`.
    pub fn reply_error(
        &mut self,
        client: ReturnAddress,
        service: Frame,
        code: ErrorCode,
        message: &str,
    ) {
        self.metrics.error(code).inc();
        self.reply(client, service, ErrorReply::body(code, message));
    }

    /// Sends DISCONNECT to a worker-side peer (best effort).
    pub fn disconnect(&mut self, peer: ReturnAddress) {
        start_message(&mut self.out, peer.id, peer.dialect, peer.envelope);
        let _ = self.send_worker_command(peer.dialect, WorkerCommand::Disconnect);
    }

    /// Encodes a worker command after whatever [`Wire::out`] already holds (the routing id) and
    /// sends it.
    pub fn send_worker_command(
        &mut self,
        dialect: protocol::Dialect,
        command: WorkerCommand,
    ) -> Result<(), zmq::Error> {
        let message = Message::Worker(command);
        let result = match protocol::encode(dialect, Direction::FromBroker, message, &mut self.out)
        {
            Ok(()) => self.send(),
            // Only PARTIAL is unencodable (in MDP/0.1), and the broker never sends it to workers.
            Err(_) => Err(zmq::Error::EINVAL),
        };
        self.out.clear();
        result
    }
}
