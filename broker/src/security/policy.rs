//! [`Policy`]: what one CURVE key may do, and its text form (the third column of an allow list).
//!
//! ```text
//! register=org.example.*;call=org.plantd.State,mmi.*;bus.publish=metric;bus.subscribe=*
//! ```
//!
//! - `;`-separated rights, each `right=patterns`, patterns `,`-separated. Rights: `register`
//!   (services its workers may register), `call` (services, `mmi.*` queries included, its
//!   clients may call), `bus.publish` and `bus.subscribe` (bus names: `state`, `event`, `metric`).
//! - A pattern is a name in which `*` stands for any run of characters (`*` alone: everything,
//!   `org.example.*`: every name under `org.example.`). No other wildcard.
//! - A right that is absent (or empty, `call=`) allows nothing. `-` alone is the empty policy: a
//!   key that may connect and do nothing.
//! - Each right may appear once; unknown rights are errors (a typo must not silently deny or
//!   allow).

use std::fmt;

/// One of the four things a key may be allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Right {
    /// Register a worker for a service.
    Register,
    /// Call a service (or an MMI query).
    Call,
    /// Publish on a bus.
    Publish,
    /// Subscribe on a bus.
    Subscribe,
}

impl Right {
    /// The right's name in the policy syntax.
    pub fn name(self) -> &'static str {
        match self {
            Right::Register => "register",
            Right::Call => "call",
            Right::Publish => "bus.publish",
            Right::Subscribe => "bus.subscribe",
        }
    }

    const ALL: [Right; 4] = [
        Right::Register,
        Right::Call,
        Right::Publish,
        Right::Subscribe,
    ];
}

/// The patterns of one right.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Patterns(Vec<Box<[u8]>>);

impl Patterns {
    fn allows(&self, name: &[u8]) -> bool {
        self.0.iter().any(|p| glob(p, name))
    }
}

/// What one key may do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    rights: [Patterns; 4],
}

impl Policy {
    /// Whether the policy grants `right` on `name` (a service or bus name).
    pub fn allows(&self, right: Right, name: &[u8]) -> bool {
        self.rights[right as usize].allows(name)
    }

    /// A policy granting `right` on `patterns` only (for built-in keys and tests).
    pub fn only(right: Right, patterns: &[&str]) -> Policy {
        let mut policy = Policy::default();
        policy.rights[right as usize] =
            Patterns(patterns.iter().map(|p| p.as_bytes().into()).collect());
        policy
    }

    /// Parses the text form (module docs).
    pub fn parse(text: &str) -> Result<Policy, String> {
        let mut policy = Policy::default();
        let text = text.trim();
        if text == "-" {
            return Ok(policy);
        }
        let mut seen = [false; 4];
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, patterns) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not right=patterns"))?;
            let name = name.trim();
            let right = Right::ALL
                .into_iter()
                .find(|r| r.name() == name)
                .ok_or_else(|| {
                    format!(
                        "unknown right {name:?} (rights: register, call, bus.publish, \
                         bus.subscribe)"
                    )
                })?;
            if std::mem::replace(&mut seen[right as usize], true) {
                return Err(format!("right {name:?} given twice"));
            }
            let mut list = Vec::new();
            for pattern in patterns.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                if pattern
                    .chars()
                    .any(|c| c.is_whitespace() || c == '=' || c == ';')
                {
                    return Err(format!("pattern {pattern:?} has a space, '=' or ';'"));
                }
                list.push(pattern.as_bytes().into());
            }
            policy.rights[right as usize] = Patterns(list);
        }
        if seen.iter().all(|s| !s) {
            return Err("empty policy (write - for a key that may do nothing)".into());
        }
        Ok(policy)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for right in Right::ALL {
            let patterns = &self.rights[right as usize].0;
            if patterns.is_empty() {
                continue;
            }
            if !first {
                f.write_str(";")?;
            }
            first = false;
            let list: Vec<_> = patterns
                .iter()
                .map(|p| String::from_utf8_lossy(p))
                .collect();
            write!(f, "{}={}", right.name(), list.join(","))?;
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// `*`-only glob match of `pattern` against `name`, without allocating or backtracking blow-up
/// (the classic greedy algorithm with one remembered star).
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names() {
        for (pattern, name, ok) in [
            ("*", "anything", true),
            ("*", "", true),
            ("org.example.*", "org.example.A", true),
            ("org.example.*", "org.example.", true),
            ("org.example.*", "org.examples", false),
            ("org.example.A", "org.example.A", true),
            ("org.example.A", "org.example.AB", false),
            ("*.State", "org.plantd.State", true),
            ("org.*.State", "org.plantd.State", true),
            ("org.*.State", "org.plantd.Identity", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
        ] {
            assert_eq!(
                glob(pattern.as_bytes(), name.as_bytes()),
                ok,
                "{pattern} {name}"
            );
        }
    }

    #[test]
    fn policies_parse_and_print() {
        let p = Policy::parse(
            "register=org.example.*; call=org.plantd.State,mmi.*;bus.publish=metric;bus.subscribe=*",
        )
        .unwrap();
        assert!(p.allows(Right::Register, b"org.example.A"));
        assert!(!p.allows(Right::Register, b"org.plantd.Identity"));
        assert!(p.allows(Right::Call, b"mmi.service"));
        assert!(!p.allows(Right::Call, b"org.plantd.Identity"));
        assert!(p.allows(Right::Publish, b"metric"));
        assert!(!p.allows(Right::Publish, b"event"));
        assert!(p.allows(Right::Subscribe, b"event"));
        assert_eq!(
            p.to_string(),
            "register=org.example.*;call=org.plantd.State,mmi.*;bus.publish=metric;bus.subscribe=*"
        );
        let none = Policy::parse("-").unwrap();
        assert_eq!(none, Policy::default());
        assert_eq!(none.to_string(), "-");
        assert!(!none.allows(Right::Call, b"x"));
        let empty_right = Policy::parse("call=").unwrap();
        assert!(!empty_right.allows(Right::Call, b""));
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in [
            "",
            "call",
            "calls=*",
            "call=*;call=x",
            "register=a b",
            "publish=metric",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad:?}");
        }
    }
}
