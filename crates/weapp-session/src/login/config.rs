//! The settings of the session layer, as its builder fills them in.

use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::l1::L1Config;

/// Login rate limit: attempts per minute per client address, with a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LoginRateLimit {
    /// Sustained login attempts per minute per client address.
    pub per_minute: NonZeroU32,
    /// How many attempts may arrive at once.
    pub burst: NonZeroU32,
}

impl LoginRateLimit {
    /// `per_minute` attempts a minute per client address, `burst` at once.
    ///
    /// ```
    /// # use std::num::NonZeroU32;
    /// let limit = weapp_session::LoginRateLimit::new(NonZeroU32::MIN, NonZeroU32::MIN);
    /// assert_eq!(limit.per_minute.get(), 1);
    /// ```
    pub fn new(per_minute: NonZeroU32, burst: NonZeroU32) -> Self {
        Self { per_minute, burst }
    }
}

/// The instance-wide budget of code exchanges that reach WeChat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExchangeBudget {
    /// Sustained exchanges per second for the whole instance.
    pub per_second: NonZeroU32,
    /// How many exchanges may start at once.
    pub burst: NonZeroU32,
}

impl ExchangeBudget {
    /// `per_second` exchanges a second for the instance, `burst` at once.
    ///
    /// ```
    /// # use std::num::NonZeroU32;
    /// let budget = weapp_session::ExchangeBudget::new(NonZeroU32::MIN, NonZeroU32::MIN);
    /// assert_eq!(budget.burst.get(), 1);
    /// ```
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self { per_second, burst }
    }
}

pub(super) const fn nz(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

/// Behaviour of the session layer, as [`crate::WxSessionLayerBuilder`] set
/// it. Read it through [`SessionEngine::config`](crate::SessionEngine::config).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionConfig {
    pub(crate) compat_ttl: Duration,
    pub(crate) token_idle_ttl: Duration,
    pub(crate) token_max_lifetime: Duration,
    pub(crate) ignore: Vec<String>,
    pub(crate) login_rate_limit: Option<LoginRateLimit>,
    pub(crate) exchange_budget: Option<ExchangeBudget>,
    pub(crate) max_login_body: usize,
    pub(crate) l1: Option<L1Config>,
    pub(crate) body_timeout_error: fn(&(dyn std::error::Error + 'static)) -> bool,
}

impl SessionConfig {
    /// TTL of a compat (code) session.
    pub fn compat_ttl(&self) -> Duration {
        self.compat_ttl
    }

    /// Sliding idle TTL of a token session.
    pub fn token_idle_ttl(&self) -> Duration {
        self.token_idle_ttl
    }

    /// Absolute lifetime of a token session.
    pub fn token_max_lifetime(&self) -> Duration {
        self.token_max_lifetime
    }

    /// Paths the layer does not touch: exact paths, or prefixes ending in `*`.
    pub fn ignore(&self) -> &[String] {
        &self.ignore
    }

    /// Per-client-address limit on login attempts that reach WeChat.
    pub fn login_rate_limit(&self) -> Option<LoginRateLimit> {
        self.login_rate_limit
    }

    /// Instance-wide limit on code exchanges that reach WeChat.
    pub fn exchange_budget(&self) -> Option<ExchangeBudget> {
        self.exchange_budget
    }

    /// Largest accepted token-login body, in bytes.
    pub fn max_login_body(&self) -> usize {
        self.max_login_body
    }

    /// The L1 cache's settings, when it is on.
    pub fn l1(&self) -> Option<L1Config> {
        self.l1
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            compat_ttl: Duration::from_secs(24 * 3600),
            token_idle_ttl: Duration::from_secs(7 * 24 * 3600),
            token_max_lifetime: Duration::from_secs(30 * 24 * 3600),
            ignore: vec!["/healthz".into(), "/readyz".into()],
            login_rate_limit: Some(LoginRateLimit { per_minute: nz(60), burst: nz(20) }),
            exchange_budget: Some(ExchangeBudget { per_second: nz(50), burst: nz(100) }),
            max_login_body: 16 * 1024,
            l1: None,
            body_timeout_error: |_| false,
        }
    }
}
