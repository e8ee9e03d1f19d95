//! plantd's credit extension to MDP: a worker may hold several requests at once.
//!
//! MDP gives a worker one request at a time, so every request crosses the worker's connection
//! as one small message and back, and pipelined traffic cannot be batched on that leg. A worker
//! that can take more says so in READY with one extra frame, `credit=N` (1 ≤ N ≤
//! [`MAX_CREDIT`]): the broker then keeps up to N of its requests in flight on that one session.
//! A READY without the frame means credit 1, plain MDP; brokers that do not know the extension
//! ignore the frame (as zguide's and the Go system's brokers do), so such a worker still works
//! there, one request at a time.
//!
//! To match each FINAL or PARTIAL to the right request even when the worker answers out of order
//! (and several requests in flight may come from one pipelining client), the broker appends a
//! 4-byte request tag to the client address it sends a credit worker. Workers treat the address
//! as opaque and echo it unchanged, as MDP already requires; [`split_address`] takes it apart.
//! Workers of credit 1 get the bare client address.

use super::{Frame, ProtocolError};

/// The most requests a worker may ask to hold at once.
pub const MAX_CREDIT: u32 = 1024;

const PREFIX: &[u8] = b"credit=";
const TAG_LEN: usize = 4;

/// The READY frame announcing `credit`.
pub(crate) fn credit_frame(credit: u32) -> Frame {
    Frame::from(format!("credit={credit}").as_str())
}

/// Parses a READY frame `credit=N`.
pub(crate) fn parse_credit(frame: &[u8]) -> Result<u32, ProtocolError> {
    frame
        .strip_prefix(PREFIX)
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=MAX_CREDIT).contains(n))
        .ok_or(ProtocolError::InvalidCredit)
}

/// The address a credit worker is given for request `tag` of the client with routing id `client`.
pub fn tag_address(client: &[u8], tag: u32) -> Frame {
    // Sized in place: a short address stays inside the zmq message, with no heap allocation.
    let mut address = Frame::with_size(client.len() + TAG_LEN);
    address[..client.len()].copy_from_slice(client);
    address[client.len()..].copy_from_slice(&tag.to_be_bytes());
    address
}

/// Splits an address made by [`tag_address`] into the client routing id and the tag; `None` if it
/// is too short to be one.
pub fn split_address(address: &[u8]) -> Option<(&[u8], u32)> {
    if address.len() <= TAG_LEN {
        return None;
    }
    let (client, tag) = address.split_at(address.len() - TAG_LEN);
    let tag = u32::from_be_bytes(tag.try_into().ok()?);
    Some((client, tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_frames_round_trip_and_bad_ones_are_refused() {
        for n in [1, 16, MAX_CREDIT] {
            assert_eq!(parse_credit(&credit_frame(n)), Ok(n));
        }
        for bad in [
            &b"credit=0"[..],
            b"credit=1025",
            b"credit=",
            b"credit=-1",
            b"credit=x",
            b"credits=4",
            b"4",
            b"",
        ] {
            assert_eq!(
                parse_credit(bad),
                Err(ProtocolError::InvalidCredit),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tagged_addresses_split_back() {
        let address = tag_address(b"\0\x01\x02\x03\x04", 0xdead_beef);
        assert_eq!(
            split_address(&address),
            Some((&b"\0\x01\x02\x03\x04"[..], 0xdead_beef))
        );
        assert_eq!(split_address(b"abcd"), None, "no room for a client id");
        assert_eq!(split_address(b"a\0\0\0\x07"), Some((&b"a"[..], 7)));
    }
}
