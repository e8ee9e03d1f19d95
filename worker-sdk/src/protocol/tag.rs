//! plantd's request tags: many requests in flight on one client socket, each reply matched to its
//! request.
//!
//! MDP carries no request ids, and a broker answers on the connection a request came in on, so a
//! client that wants to tell replies apart would need a socket per request in flight. A plantd
//! client instead puts a **tag** (one frame, 1 to [`MAX_TAG_LEN`] bytes) and an empty delimiter in
//! front of an otherwise ordinary client request, as a ROUTER device in front of the broker would
//! put its peer's routing id:
//!
//! ```text
//! client → broker   [tag, "", <any dialect's REQUEST, with or without its own leading "">]
//! broker → client   [tag, "", <the dialect's PARTIAL or FINAL>]
//! ```
//!
//! The broker keeps the tag with the request and puts it, and the delimiter, in front of every
//! reply to it, in every dialect. No valid untagged message starts with a non-empty frame
//! followed by an empty one, so tagged and untagged messages cannot be confused. The same rule
//! lets a REQ or DEALER client reach the broker through a ROUTER↔DEALER device: the device's
//! routing-id frame is the tag. Only client requests may be tagged; a tagged worker message is
//! malformed.
//!
//! Brokers that do not know tags (zguide's, the Go system's) drop tagged requests as malformed,
//! so only plantd's [`AsyncClient`](crate::AsyncClient) tags, and plantd's blocking
//! [`Client`](crate::Client) stays plain MDP.

use super::Frame;

/// The longest tag: a ZeroMQ routing id's limit, so a device's peer ids fit.
pub const MAX_TAG_LEN: usize = 255;

/// What the first frames of a message say about a tag.
#[derive(Debug, PartialEq, Eq)]
pub enum Tagging {
    /// No tag: an ordinary MDP message.
    Untagged,
    /// The first frame is a tag (and the second the empty delimiter).
    Tagged,
    /// Shaped like a tagged message but the tag is longer than [`MAX_TAG_LEN`].
    TooLong,
}

/// Whether `frames` (a message without the ROUTER's routing id) starts with a tag and its
/// delimiter.
pub fn tagging(frames: &[Frame]) -> Tagging {
    match frames {
        // The delimiter first: in an untagged message the second frame is a command or a
        // header, so one look (two libzmq calls) settles it.
        [tag, delimiter, ..] if delimiter.is_empty() && !tag.is_empty() => {
            if tag.len() > MAX_TAG_LEN {
                Tagging::TooLong
            } else {
                Tagging::Tagged
            }
        }
        _ => Tagging::Untagged,
    }
}

/// Starts a tagged message in `out`: the 4-byte tag `tag` and the delimiter.
pub fn push_tag(out: &mut Vec<Frame>, tag: u32) {
    out.push(Frame::from(&tag.to_be_bytes()[..]));
    out.push(Frame::new());
}

/// Splits a reply received by a tagging client into its 4-byte tag and the frames after the
/// delimiter; `None` if it is not tagged that way (malformed, or not for a tagging client).
pub fn split_reply(mut frames: Vec<Frame>) -> Option<(u32, Vec<Frame>)> {
    if frames.len() < 3 || !frames[1].is_empty() {
        return None;
    }
    let tag = u32::from_be_bytes(frames[0][..].try_into().ok()?);
    frames.drain(..2);
    Some((tag, frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]]) -> Vec<Frame> {
        parts.iter().map(|p| Frame::from(*p)).collect()
    }

    #[test]
    fn only_a_non_empty_frame_then_an_empty_one_is_a_tag() {
        // Every dialect's untagged shapes: 0.2 DEALER, 0.2 REQ / 0.1 / Go (leading empty).
        for untagged in [
            frames(&[b"MDPC02", &[1], b"svc", b"body"]),
            frames(&[b"", b"MDPC01", b"svc", b"body"]),
            frames(&[b"", b"MDPC02", b"REQUEST", b"svc"]),
            frames(&[b"MDPW02", &[5]]),
            frames(&[b"x"]),
            frames(&[]),
        ] {
            assert_eq!(tagging(&untagged), Tagging::Untagged, "{untagged:?}");
        }
        assert_eq!(
            tagging(&frames(&[b"\0\0\0\x07", b"", b"MDPC02", &[1], b"svc"])),
            Tagging::Tagged
        );
        let long = vec![7u8; MAX_TAG_LEN + 1];
        assert_eq!(tagging(&frames(&[&long, b"", b"MDPC02"])), Tagging::TooLong);
    }

    #[test]
    fn a_pushed_tag_splits_back_and_bad_replies_are_refused() {
        let mut out = Vec::new();
        push_tag(&mut out, 0xdead_beef);
        out.extend(frames(&[b"MDPC02", &[3], b"svc"]));
        assert_eq!(tagging(&out), Tagging::Tagged);
        let (tag, rest) = split_reply(out).unwrap();
        assert_eq!(tag, 0xdead_beef);
        assert_eq!(rest.len(), 3);
        assert!(
            split_reply(frames(&[b"abc", b"", b"MDPC02"])).is_none(),
            "3-byte tag"
        );
        assert!(
            split_reply(frames(&[b"abcd", b"x", b"MDPC02"])).is_none(),
            "no delimiter"
        );
        assert!(
            split_reply(frames(&[b"abcd", b""])).is_none(),
            "nothing after"
        );
    }
}
