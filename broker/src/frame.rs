//! The two libzmq calls on frames that the broker makes through `zmq-sys` rather than the `zmq`
//! crate: sharing a frame's bytes between two [`Frame`]s without copying them, and sending a
//! frame without closing the emptied message afterwards.
//!
//! The broker keeps each in-flight request so it can dispatch it again if the worker dies, yet
//! sends the same body to the worker. libzmq's `zmq_msg_copy` makes a second message that shares
//! the first one's reference-counted buffer (small messages are copied, which is as cheap). The
//! `zmq` crate does not expose it.
//!
//! `zmq::Socket::send` drops the message it sent, and so calls `zmq_msg_close` on it: one more
//! call into libzmq per frame, eleven per request relayed, for a message that libzmq has already
//! emptied (see [`send`]).

use plantd_worker_sdk::protocol::Frame;

// `zmq::Message` is a struct whose only field is a `zmq_msg_t`. Equal size and alignment mean that
// field sits at offset 0, so a pointer to the message is a pointer to its `zmq_msg_t`.
const _: () = assert!(
    std::mem::size_of::<Frame>() == std::mem::size_of::<zmq_sys::zmq_msg_t>()
        && std::mem::align_of::<Frame>() == std::mem::align_of::<zmq_sys::zmq_msg_t>()
);

fn raw(frame: &mut Frame) -> *mut zmq_sys::zmq_msg_t {
    (frame as *mut Frame).cast()
}

/// A second frame with the same content as `frame`, sharing its buffer when libzmq can.
pub fn share(frame: &mut Frame) -> Frame {
    let mut copy = Frame::new();
    // SAFETY: both pointers point at initialised `zmq_msg_t`s (see the layout assertion above);
    // `zmq_msg_copy` releases `copy`'s empty content and makes it share `frame`'s buffer,
    // bumping the buffer's atomic reference count. Both messages stay valid and are closed by
    // their own `Drop`.
    let rc = unsafe { zmq_sys::zmq_msg_copy(raw(&mut copy), raw(frame)) };
    if rc == 0 {
        copy
    } else {
        Frame::from(&frame[..])
    }
}

/// Sends `frame` on `socket` (a raw libzmq socket, `zmq::Socket::as_mut_ptr`) with `flags`, as
/// `zmq::Socket::send` does; a frame libzmq refused is closed and the error returned.
pub fn send(socket: *mut std::ffi::c_void, mut frame: Frame, flags: i32) -> Result<(), zmq::Error> {
    // SAFETY: `frame` is an initialised `zmq_msg_t` (layout assertion above) and `socket` a live
    // socket owned by the caller's thread.
    let rc = unsafe { zmq_sys::zmq_msg_send(raw(&mut frame), socket, flags) };
    if rc >= 0 {
        // zmq_msg_send(3): on success the message is nullified (reset to an empty message that
        // owns nothing), so closing it would only spend a call; forgetting it leaks nothing.
        std::mem::forget(frame);
        Ok(())
    } else {
        // SAFETY: reads the calling thread's libzmq errno; `frame` is closed by its `Drop`.
        Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }))
    }
}

/// [`share`] for every frame of a body.
pub fn share_all(frames: &mut [Frame]) -> Vec<Frame> {
    frames.iter_mut().map(share).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_frames_have_equal_content_and_outlive_the_original() {
        let big = vec![7u8; 4096];
        let mut frames = vec![
            Frame::from(&b"small"[..]),
            Frame::from(big.clone()),
            Frame::new(),
        ];
        let copies = share_all(&mut frames);
        assert_eq!(bytes(&copies), bytes(&frames));
        drop(frames);
        assert_eq!(&copies[1][..], &big[..]);
        assert_eq!(&copies[0][..], b"small");
        assert!(copies[2].is_empty());
    }

    #[test]
    fn send_delivers_the_frame_and_reports_a_refused_one() {
        let context = zmq::Context::new();
        let mut router = context.socket(zmq::ROUTER).unwrap();
        router.set_router_mandatory(true).unwrap();
        router.bind("inproc://frame-send").unwrap();
        let dealer = context.socket(zmq::DEALER).unwrap();
        dealer.set_identity(b"peer").unwrap();
        dealer.connect("inproc://frame-send").unwrap();
        dealer.send("hello", 0).unwrap();
        let id = router.recv_msg(0).unwrap();
        assert_eq!(&router.recv_msg(0).unwrap()[..], b"hello");

        let socket = router.as_mut_ptr();
        let unknown = send(
            socket,
            Frame::from(&b"nobody"[..]),
            zmq::DONTWAIT | zmq::SNDMORE,
        );
        assert_eq!(unknown, Err(zmq::Error::EHOSTUNREACH));
        send(socket, id, zmq::DONTWAIT | zmq::SNDMORE).unwrap();
        send(socket, Frame::from(vec![9u8; 4096]), zmq::DONTWAIT).unwrap();
        assert_eq!(&dealer.recv_msg(0).unwrap()[..], &[9u8; 4096][..]);
    }

    fn bytes(frames: &[Frame]) -> Vec<Vec<u8>> {
        frames.iter().map(|f| f.to_vec()).collect()
    }
}
