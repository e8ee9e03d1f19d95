//! libzmq socket options the `zmq` crate 0.10 does not expose: [`ZAP_ENFORCE_DOMAIN`] (fail
//! closed without a ZAP handler) and [`XPUB_MANUAL`] (the application decides each
//! subscription), set with [`set_int`].

/// `ZMQ_ZAP_ENFORCE_DOMAIN`: a DRAFT name in `zmq.h`, but handled by every libzmq 4.3 build.
pub const ZAP_ENFORCE_DOMAIN: i32 = 93;
/// `ZMQ_XPUB_MANUAL`.
pub const XPUB_MANUAL: i32 = 71;

/// Sets the integer socket option `option` of `socket` to `value`.
pub fn set_int(socket: &mut zmq::Socket, option: i32, value: i32) -> zmq::Result<()> {
    // SAFETY: a live socket, an int option read by libzmq as `sizeof(int)` bytes from a valid
    // pointer; libzmq copies the value before returning.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            option,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        // SAFETY: reads libzmq's thread-local errno, set by the failed call above.
        Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }))
    }
}
