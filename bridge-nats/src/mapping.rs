//! What crosses the bridge and how: topic ↔ subject mapping ([`SubjectMap`]), the payload of a
//! bus message as a NATS message body ([`encode_frames`], [`decode_frames`]), the headers the
//! bridge sets, and [`RecentImports`], the memory that keeps a bridge from exporting again what it
//! imported itself.
//!
//! Payload rule: a one-frame payload (the usual `[topic, msgpack]`) is the NATS body exactly, byte
//! for byte, with no `plantd-frames` header, so plain NATS clients read MessagePack as it is.
//! Any other frame count (none, or several) sets `plantd-frames: <n>` and the body is each frame
//! as a 4-byte big-endian length followed by its bytes. A NATS message without the header is one
//! frame: what a plain NATS publisher sends arrives as `[topic, body]`.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use thiserror::Error;

/// Header naming the origin bridge of an exported message.
pub const ORIGIN_HEADER: &str = "plantd-origin";
/// Header counting the bridges a message went through (1 when first exported).
pub const HOPS_HEADER: &str = "plantd-hops";
/// Header with the number of payload frames, when that is not exactly one.
pub const FRAMES_HEADER: &str = "plantd-frames";
/// Header with the time the exporting bridge received the message from its bus, Unix
/// microseconds (for the import lag).
pub const TIME_HEADER: &str = "plantd-time";

/// Why a NATS body could not be turned back into frames.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// The `plantd-frames` header is not a number.
    #[error("plantd-frames header {0:?} is not a frame count")]
    BadCount(String),
    /// The body does not hold the announced frames exactly.
    #[error("body does not hold {0} length-prefixed frames")]
    BadBody(usize),
}

/// Whether `subject` may be published on NATS: non-empty tokens separated by `.`, without
/// whitespace, control characters or the wildcards `*` and `>`.
pub fn check_subject(subject: &str) -> Result<(), &'static str> {
    if subject.is_empty() {
        return Err("is empty");
    }
    if subject.split('.').any(str::is_empty) {
        return Err("has an empty token ('..', or '.' at an end)");
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or a control character");
    }
    if subject.contains(['*', '>']) {
        return Err("contains a wildcard ('*' or '>')");
    }
    Ok(())
}

/// Whether `prefix` is usable as a subject prefix: empty, or whole valid tokens ending in `.`.
pub fn check_subject_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() {
        return Ok(());
    }
    let Some(tokens) = prefix.strip_suffix('.') else {
        return Err("must be empty or end with '.' (NATS matches whole tokens)");
    };
    check_subject(tokens)
}

/// Why a topic or subject cannot cross.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmappable {
    /// It does not start with the configured prefix.
    OutsidePrefix,
    /// The mapped subject is not a valid NATS subject (the reason).
    InvalidSubject(&'static str),
}

/// The configured prefix rewrite (`org.plantd.` ↔ `plantd.` by default).
#[derive(Clone, Debug)]
pub struct SubjectMap {
    topic_prefix: String,
    subject_prefix: String,
}

impl SubjectMap {
    /// A map from `topic_prefix` (bus side) to `subject_prefix` (NATS side).
    pub fn new(topic_prefix: &str, subject_prefix: &str) -> Self {
        SubjectMap {
            topic_prefix: topic_prefix.to_owned(),
            subject_prefix: subject_prefix.to_owned(),
        }
    }

    /// The subject of a bus topic: `org.plantd.metric.vm.cpu` → `plantd.metric.vm.cpu`.
    pub fn subject(&self, topic: &str) -> Result<String, Unmappable> {
        let rest = topic
            .strip_prefix(&self.topic_prefix)
            .ok_or(Unmappable::OutsidePrefix)?;
        let subject = format!("{}{rest}", self.subject_prefix);
        check_subject(&subject).map_err(Unmappable::InvalidSubject)?;
        Ok(subject)
    }

    /// The bus topic of a subject: the reverse of [`subject`](Self::subject).
    pub fn topic(&self, subject: &str) -> Result<String, Unmappable> {
        let rest = subject
            .strip_prefix(&self.subject_prefix)
            .ok_or(Unmappable::OutsidePrefix)?;
        Ok(format!("{}{rest}", self.topic_prefix))
    }
}

/// A bus payload as a NATS body: `(None, frame)` for exactly one frame (moved, not copied),
/// else `(Some(count), length-prefixed frames)`.
pub fn encode_frames(mut frames: Vec<Vec<u8>>) -> (Option<usize>, Vec<u8>) {
    if frames.len() == 1 {
        return (None, frames.pop().unwrap_or_default());
    }
    let size = frames.iter().map(|f| f.len() + 4).sum();
    let mut body = Vec::with_capacity(size);
    for frame in &frames {
        // Frames beyond 4 GiB cannot be on a bus (the broker's max_message_size is far less).
        body.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        body.extend_from_slice(frame);
    }
    (Some(frames.len()), body)
}

/// The bus payload of a NATS body, given its `plantd-frames` header (if any).
pub fn decode_frames(count: Option<&str>, body: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
    let Some(count) = count else {
        return Ok(vec![body.to_vec()]);
    };
    let n: usize = count
        .trim()
        .parse()
        .map_err(|_| FrameError::BadCount(count.chars().take(32).collect()))?;
    // Every frame takes at least its 4-byte length: a huge count cannot allocate much.
    if n > body.len() / 4 + 1 {
        return Err(FrameError::BadBody(n));
    }
    let mut frames = Vec::with_capacity(n);
    let mut rest = body;
    for _ in 0..n {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or(FrameError::BadBody(n))?;
        let len = u32::from_be_bytes(*len) as usize;
        if tail.len() < len {
            return Err(FrameError::BadBody(n));
        }
        frames.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    if !rest.is_empty() {
        return Err(FrameError::BadBody(n));
    }
    Ok(frames)
}

/// The messages a bridge published on one bus recently, as digests of topic and frames, so that
/// when its own subscription on that bus hands one back it is recognised and not exported again.
///
/// A multiset with a time window and a size bound: each import adds one entry, each recognised
/// echo takes one (the oldest), and entries older than the window or beyond the bound are
/// forgotten. The digest is a keyed SipHash (random key per process), so bus publishers cannot
/// aim collisions at it. A genuinely new bus message identical, byte for byte, to one imported
/// within the window is taken for the echo and not exported (docs/bridge-nats.md, limits).
pub struct RecentImports {
    hasher: RandomState,
    window: Duration,
    max: usize,
    entries: VecDeque<(Instant, u64)>,
    /// digest → (not yet seen back, seen back but not yet expired).
    counts: HashMap<u64, (u32, u32)>,
}

impl RecentImports {
    /// Remembers entries for `window`, at most `max` of them.
    pub fn new(window: Duration, max: usize) -> Self {
        RecentImports {
            hasher: RandomState::new(),
            window,
            max: max.max(1),
            entries: VecDeque::new(),
            counts: HashMap::new(),
        }
    }

    /// The digest of a bus message.
    pub fn digest(&self, topic: &str, frames: &[Vec<u8>]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(topic.as_bytes());
        h.write_usize(frames.len());
        for frame in frames {
            h.write_usize(frame.len());
            h.write(frame);
        }
        h.finish()
    }

    /// Records one message this bridge is about to publish on the bus.
    pub fn insert(&mut self, digest: u64, now: Instant) {
        self.expire(now);
        if self.entries.len() >= self.max {
            self.forget_oldest();
        }
        self.entries.push_back((now, digest));
        self.counts.entry(digest).or_default().0 += 1;
    }

    /// Whether a message seen on the bus is one this bridge published (consuming the record).
    pub fn take(&mut self, digest: u64, now: Instant) -> bool {
        self.expire(now);
        match self.counts.get_mut(&digest) {
            Some((unseen, seen)) if *unseen > 0 => {
                *unseen -= 1;
                *seen += 1;
                true
            }
            _ => false,
        }
    }

    /// How many records are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.entries.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        let Some((_, digest)) = self.entries.pop_front() else {
            return;
        };
        if let Some(count) = self.counts.get_mut(&digest) {
            // Echoes consume the oldest records first, so the oldest was seen if any was.
            if count.1 > 0 {
                count.1 -= 1;
            } else {
                count.0 = count.0.saturating_sub(1);
            }
            if *count == (0, 0) {
                self.counts.remove(&digest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_map_to_subjects_and_back() {
        let map = SubjectMap::new("org.plantd.", "plantd.");
        assert_eq!(
            map.subject("org.plantd.metric.vm.cpu").unwrap(),
            "plantd.metric.vm.cpu"
        );
        assert_eq!(
            map.topic("plantd.metric.vm.cpu").unwrap(),
            "org.plantd.metric.vm.cpu"
        );
        assert_eq!(map.subject("com.example.x"), Err(Unmappable::OutsidePrefix));
        for bad in [
            "org.plantd.metric.bad host.cpu",
            "org.plantd.metric.a*.cpu",
            "org.plantd.metric.a>b",
            "org.plantd.metric..cpu",
            "org.plantd.metric.",
            "org.plantd.metric.tab\there",
        ] {
            assert!(
                matches!(map.subject(bad), Err(Unmappable::InvalidSubject(_))),
                "{bad}"
            );
        }
        let all = SubjectMap::new("", "site1.");
        assert_eq!(all.subject("a.b").unwrap(), "site1.a.b");
    }

    #[test]
    fn subject_prefixes_are_whole_tokens() {
        assert!(check_subject_prefix("").is_ok());
        assert!(check_subject_prefix("plantd.").is_ok());
        assert!(check_subject_prefix("plantd").is_err());
        assert!(check_subject_prefix(".").is_err());
        assert!(check_subject_prefix("a.>.").is_err());
    }

    #[test]
    fn frames_round_trip_and_one_frame_is_the_body_itself() {
        let one = vec![vec![0x81, 0xa1, b'v', 0x01]];
        assert_eq!(encode_frames(one.clone()), (None, one[0].clone()));
        assert_eq!(decode_frames(None, &one[0]).unwrap(), one);
        for frames in [
            vec![],
            vec![b"a".to_vec(), vec![], vec![0, 0xff, 0, 0]],
            vec![vec![]; 2],
        ] {
            let (count, body) = encode_frames(frames.clone());
            assert_eq!(count, Some(frames.len()));
            let back = decode_frames(Some(&count.unwrap().to_string()), &body).unwrap();
            assert_eq!(back, frames);
        }
        assert!(decode_frames(Some("x"), b"").is_err());
        assert!(decode_frames(Some("1"), &[0, 0, 0, 5, 1]).is_err());
        assert!(decode_frames(Some("1"), &[0, 0, 0, 1, 1, 2]).is_err());
        assert!(decode_frames(Some("4000000000"), &[0; 8]).is_err());
    }

    #[test]
    fn recent_imports_recognise_each_echo_once_within_the_window() {
        let t0 = Instant::now();
        let mut recent = RecentImports::new(Duration::from_secs(10), 3);
        let a = recent.digest("t", &[b"a".to_vec()]);
        let b = recent.digest("t", &[b"b".to_vec()]);
        assert_ne!(a, b);
        assert_ne!(
            recent.digest("t", &[b"ab".to_vec()]),
            recent.digest("t", &[b"a".to_vec(), b"b".to_vec()])
        );
        recent.insert(a, t0);
        recent.insert(a, t0);
        assert!(recent.take(a, t0));
        assert!(recent.take(a, t0));
        assert!(!recent.take(a, t0), "two imports, two echoes");
        assert!(!recent.take(b, t0));
        // Expiry forgets both seen and unseen records.
        recent.insert(b, t0);
        let later = t0 + Duration::from_secs(11);
        assert!(!recent.take(b, later));
        assert!(recent.is_empty());
        // The bound forgets the oldest.
        for i in 0..4u8 {
            let d = recent.digest("t", &[vec![i]]);
            recent.insert(d, later);
        }
        assert_eq!(recent.len(), 3);
        let first = recent.digest("t", &[vec![0]]);
        assert!(!recent.take(first, later));
        let last = recent.digest("t", &[vec![3]]);
        assert!(recent.take(last, later));
    }
}
