//! The login rate limit: attempts that reach WeChat, per client address.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::Ordering;

use crate::error::SessionError;

use super::engine::SessionEngine;

impl SessionEngine {
    pub(super) fn check_rate(&self, client: Option<IpAddr>) -> Result<(), SessionError> {
        let Some(limiter) = &self.rate_limiter else {
            return Ok(());
        };
        let Some(ip) = client else {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "login_rate_limit is set but requests carry no client address; serve with \
                     into_make_service_with_connect_info::<SocketAddr>() to enable it"
                )
            });
            return Ok(());
        };
        if self.logins_seen.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            limiter.retain_recent();
        }
        limiter.check_key(&rate_key(ip)).map_err(|_| SessionError::TooManyRequests)
    }
}

/// The login rate limit's bucket of a client address: IPv4 as is (also when
/// it arrives IPv4-mapped), IPv6 by its /64, the smallest block a host is
/// normally given, so one host cannot rotate addresses for fresh buckets.
pub(crate) fn rate_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_a_bucket_per_64_and_mapped_ipv4_is_canonical() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(rate_key(ip("2001:db8:1:2:aaaa::1")), rate_key(ip("2001:db8:1:2:ffff:1:2:3")));
        assert_eq!(rate_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_ne!(rate_key(ip("2001:db8:1:2::1")), rate_key(ip("2001:db8:1:3::1")));
        assert_eq!(rate_key(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(rate_key(ip("203.0.113.7")), ip("203.0.113.7"));
        assert_ne!(rate_key(ip("203.0.113.7")), rate_key(ip("203.0.113.8")));
    }
}
