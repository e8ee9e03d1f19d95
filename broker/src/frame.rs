//! Sharing a frame's bytes between two [`Frame`]s without copying them.
//!
//! The broker keeps each in-flight request so it can dispatch it again if the worker dies, yet
//! sends the same body to the worker. libzmq's `zmq_msg_copy` makes a second message that shares
//! the first one's reference-counted buffer (small messages are copied, which is as cheap). The
//! `zmq` crate does not expose it, so this module calls `zmq-sys` directly.

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

    fn bytes(frames: &[Frame]) -> Vec<Vec<u8>> {
        frames.iter().map(|f| f.to_vec()).collect()
    }
}
