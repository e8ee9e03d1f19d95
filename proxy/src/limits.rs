//! What a request may ask for and how much: the client's address (socket, or `X-Forwarded-For`
//! from a trusted proxy), its bearer token, per-address and per-token rate limits (`governor`
//! token buckets, `429` with `Retry-After`), the cap on requests in flight (`503`), and the
//! per-request timeout (`X-Request-Timeout`, capped).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::RateLimitConfig;
use crate::reply::ApiError;

/// The header a client sets to shorten (or lengthen, up to the configured maximum) its call's
/// timeout, in milliseconds.
pub const REQUEST_TIMEOUT_HEADER: &str = "x-request-timeout";

/// The address a request comes from: the socket's peer, or, when that peer is a trusted proxy,
/// the right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    // Entries are appended by each hop: the nearest untrusted one is the client. Anything left
    // of it was written by the client and proves nothing.
    forwarded
        .iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .or(forwarded.first())
        .copied()
        .unwrap_or(peer)
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The timeout of this request's call: `X-Request-Timeout` (milliseconds) if given, at most
/// `max`; else `default`.
pub fn request_timeout(
    headers: &HeaderMap,
    default: Duration,
    max: Duration,
) -> Result<Duration, ApiError> {
    let Some(value) = headers.get(REQUEST_TIMEOUT_HEADER) else {
        return Ok(default);
    };
    let millis: u64 = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&ms| ms > 0)
        .ok_or_else(|| {
            ApiError::bad_request("X-Request-Timeout must be a positive number of milliseconds")
        })?;
    Ok(Duration::from_millis(millis).min(max))
}

/// Per-address and per-token token buckets.
pub struct RateLimits {
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Keyed by a hash of the token, so no token is kept in memory longer than its request.
    per_token: Option<DefaultKeyedRateLimiter<u64>>,
    /// Seeded per process, so nobody can craft a token that shares another's bucket.
    token_hasher: RandomState,
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The client address's bucket.
    Address,
    /// The bearer token's bucket.
    Token,
}

impl Limit {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Limit::Address => "address",
            Limit::Token => "token",
        }
    }
}

impl RateLimits {
    /// The limits `config` describes (a rate of 0 switches that one off).
    pub fn new(config: &RateLimitConfig) -> RateLimits {
        let quota = |rate: u32, burst: u32| {
            let rate = NonZeroU32::new(rate)?;
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            Some(Quota::per_second(rate).allow_burst(burst))
        };
        RateLimits {
            per_address: quota(config.per_address_per_second, config.per_address_burst)
                .map(RateLimiter::keyed),
            per_token: quota(config.per_token_per_second, config.per_token_burst)
                .map(RateLimiter::keyed),
            token_hasher: RandomState::new(),
        }
    }

    /// Takes one request from the address's and the token's buckets; on refusal, which limit
    /// and the seconds until a request would pass.
    pub fn check(&self, ip: IpAddr, token: Option<&str>) -> Result<(), (Limit, u64)> {
        let wait = |not_until: governor::NotUntil<_>| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        };
        if let Some(limiter) = &self.per_address {
            limiter
                .check_key(&ip)
                .map_err(|n| (Limit::Address, wait(n)))?;
        }
        if let (Some(limiter), Some(token)) = (&self.per_token, token) {
            limiter
                .check_key(&self.token_hasher.hash_one(token))
                .map_err(|n| (Limit::Token, wait(n)))?;
        }
        Ok(())
    }

    /// Forgets buckets that are full again, so memory follows the active clients.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.per_address {
            limiter.retain_recent();
        }
        if let Some(limiter) = &self.per_token {
            limiter.retain_recent();
        }
    }
}

/// The `429` a refused request gets.
pub fn rate_limited(limit: Limit, retry_after: u64) -> ApiError {
    let message = match limit {
        Limit::Address => "too many requests from this address",
        Limit::Token => "too many requests with this token",
    };
    ApiError::limited(
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        message,
        retry_after,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 192.0.2.7")]);
        assert_eq!(client_ip(proxy, &h, &[]), proxy);
        assert_eq!(
            client_ip(proxy, &h, &[proxy]),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &[proxy]), proxy);
    }

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        assert_eq!(
            bearer(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn the_timeout_header_is_capped() {
        let (default, max) = (Duration::from_secs(5), Duration::from_secs(60));
        let t = |v: &str| request_timeout(&headers(&[("x-request-timeout", v)]), default, max);
        assert_eq!(t("250").unwrap(), Duration::from_millis(250));
        assert_eq!(t("999999999").unwrap(), max);
        assert!(t("soon").is_err());
        assert_eq!(
            request_timeout(&HeaderMap::new(), default, max).unwrap(),
            default
        );
    }

    #[test]
    fn a_bucket_refuses_beyond_its_burst() {
        let limits = RateLimits::new(&RateLimitConfig {
            per_address_per_second: 1,
            per_address_burst: 2,
            per_token_per_second: 0,
            per_token_burst: 0,
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(limits.check(ip, None).is_ok());
        assert!(limits.check(ip, None).is_ok());
        let (limit, wait) = limits.check(ip, None).unwrap_err();
        assert_eq!(limit, Limit::Address);
        assert!(wait >= 1);
    }
}
