//! What the fake remembers: minted codes, issued tokens, phone codes,
//! call counters, faults; and the public types that describe them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use super::FakeWeChat;

/// How long a minted code (login or phone) stays valid, like WeChat's.
pub(super) const DEFAULT_CODE_TTL: Duration = Duration::from_secs(5 * 60);
/// How long an access token stays valid, like WeChat's.
pub(super) const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(7200);
/// In normal mode WeChat hands out a new token this long before the old one expires.
pub(super) const TOKEN_EARLY_RENEWAL: Duration = Duration::from_secs(5 * 60);
/// Expired tokens are remembered this long (so they answer 42001, not 40001).
pub(super) const EXPIRED_TOKEN_MEMORY: Duration = Duration::from_secs(3600);

pub(super) struct Shared {
    pub(super) app_id: String,
    pub(super) secret: String,
    pub(super) inner: Mutex<Inner>,
}

#[derive(Default)]
pub(super) struct Inner {
    pub(super) codes: HashMap<String, CodeEntry>,
    pub(super) code_ttl: Option<Duration>,
    pub(super) faults: Faults,
    /// Calls per WeChat endpoint (including failed ones).
    pub(super) calls: BTreeMap<String, u64>,
    pub(super) codes_minted: u64,
    /// Access tokens issued by `stable_token`.
    pub(super) tokens: HashMap<String, TokenEntry>,
    /// The token `stable_token` hands out in normal mode while it is fresh.
    pub(super) newest_token: Option<String>,
    pub(super) token_ttl: Option<Duration>,
    /// Codes for `getuserphonenumber`.
    pub(super) phone_codes: HashMap<String, PhoneEntry>,
    /// Texts containing any of these are "risky" for `msg_sec_check`.
    pub(super) risky_words: Vec<String>,
}

pub(super) struct TokenEntry {
    pub(super) expires_at: Instant,
    /// Invalidated by a forced refresh (answers 40001).
    pub(super) revoked: bool,
}

pub(super) struct PhoneEntry {
    pub(super) phone_number: String,
    pub(super) country_code: String,
    pub(super) minted_at: Instant,
    pub(super) used: bool,
}

/// Open data encrypted by the fake, as a mini-program receives it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EncryptedOpenData {
    /// The `encryptedData` (base64).
    #[serde(rename = "encryptedData")]
    pub encrypted_data: String,
    /// The `iv` (base64 of 16 bytes).
    pub iv: String,
}

pub(super) struct CodeEntry {
    pub(super) openid: String,
    pub(super) session_key: String,
    pub(super) unionid: Option<String>,
    pub(super) minted_at: Instant,
    pub(super) used: bool,
}

/// A code minted by the fake, with the session it exchanges for.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MintedCode {
    /// The code to send as `X-WX-Code` / `js_code`.
    pub code: String,
    /// The openid `jscode2session` will answer.
    pub openid: String,
    /// The session_key (base64 of 16 bytes) `jscode2session` will answer.
    pub session_key: String,
}

/// Call counters of the fake.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FakeStats {
    /// Calls of `/sns/jscode2session`, failed ones included.
    pub jscode2session_calls: u64,
    /// Codes minted so far.
    pub codes_minted: u64,
    /// Calls per WeChat endpoint path, failed ones included.
    pub calls: BTreeMap<String, u64>,
}

impl FakeStats {
    /// Calls of one endpoint (e.g. [`JSCODE2SESSION`](super::JSCODE2SESSION)).
    pub fn calls_to(&self, endpoint: &str) -> u64 {
        self.calls.get(endpoint).copied().unwrap_or(0)
    }
}

/// Faults the fake injects into its WeChat endpoints (not into `/dev/*`).
/// Start from `Faults::default()` (none):
///
/// ```
/// let faults = weapp_wechat::Faults::default().with_busy(2).with_delay_ms(300);
/// assert_eq!((faults.busy, faults.delay_ms), (2, 300));
/// ```
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Faults {
    /// Sleep this long before answering.
    pub delay_ms: u64,
    /// Answer HTTP 500 with a non-JSON body.
    pub http_500: bool,
    /// The next N calls answer errcode -1 "system error" (decremented per call).
    pub busy: u32,
    /// `jscode2session` only: consume the code first (mark it used), then
    /// sleep this long before answering, as a slow upstream does. A client
    /// that gives up meanwhile has lost the code.
    pub answer_delay_ms: u64,
    /// Answer this errcode with [`Faults::errmsg`] instead of the endpoint's
    /// answer (0: off), e.g. to see what the gateway does with a hostile errmsg.
    pub errcode: i64,
    /// The errmsg sent with [`Faults::errcode`].
    pub errmsg: String,
}

impl Faults {
    /// Sleep `ms` milliseconds before answering.
    ///
    /// ```
    /// let faults = weapp_wechat::Faults::default().with_delay_ms(1_500);
    /// assert_eq!(faults.delay_ms, 1_500);
    /// ```
    pub fn with_delay_ms(mut self, ms: u64) -> Self {
        self.delay_ms = ms;
        self
    }

    /// Answer HTTP 500 with a non-JSON body.
    ///
    /// ```
    /// let faults = weapp_wechat::Faults::default().with_http_500();
    /// assert!(faults.http_500);
    /// ```
    pub fn with_http_500(mut self) -> Self {
        self.http_500 = true;
        self
    }

    /// The next `calls` calls answer errcode -1 "system error".
    ///
    /// ```
    /// let faults = weapp_wechat::Faults::default().with_busy(3);
    /// assert_eq!(faults.busy, 3);
    /// ```
    pub fn with_busy(mut self, calls: u32) -> Self {
        self.busy = calls;
        self
    }

    /// `jscode2session` only: spend the code, then sleep `ms` milliseconds
    /// before answering, as a slow upstream does.
    ///
    /// ```
    /// let faults = weapp_wechat::Faults::default().with_answer_delay_ms(1_200);
    /// assert_eq!(faults.answer_delay_ms, 1_200);
    /// ```
    pub fn with_answer_delay_ms(mut self, ms: u64) -> Self {
        self.answer_delay_ms = ms;
        self
    }

    /// Answer `errcode` with `errmsg` instead of the endpoint's answer.
    ///
    /// ```
    /// let faults = weapp_wechat::Faults::default().with_errcode(40029, "invalid code");
    /// assert_eq!((faults.errcode, faults.errmsg.as_str()), (40029, "invalid code"));
    /// ```
    pub fn with_errcode(mut self, errcode: i64, errmsg: impl Into<String>) -> Self {
        self.errcode = errcode;
        self.errmsg = errmsg.into();
        self
    }
}

impl FakeWeChat {
    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent.
        self.state.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn try_mint(
        &self,
        openid: String,
        session_key: Option<String>,
        unionid: Option<String>,
    ) -> Result<MintedCode, getrandom::Error> {
        let session_key = match session_key {
            Some(key) => key,
            None => STANDARD.encode(random_bytes::<16>()?),
        };
        let code = URL_SAFE_NO_PAD.encode(random_bytes::<24>()?);
        let mut inner = self.lock();
        let ttl = inner.code_ttl.unwrap_or(DEFAULT_CODE_TTL);
        // Forget codes that can only answer 40029 anyway.
        inner.codes.retain(|_, e| e.minted_at.elapsed() <= ttl);
        inner.codes.insert(
            code.clone(),
            CodeEntry {
                openid: openid.clone(),
                session_key: session_key.clone(),
                unionid,
                minted_at: Instant::now(),
                used: false,
            },
        );
        inner.codes_minted += 1;
        Ok(MintedCode { code, openid, session_key })
    }

    pub(super) fn try_mint_phone(
        &self,
        phone_number: String,
        country_code: String,
    ) -> Result<String, getrandom::Error> {
        let code = URL_SAFE_NO_PAD.encode(random_bytes::<24>()?);
        let mut inner = self.lock();
        let ttl = inner.code_ttl.unwrap_or(DEFAULT_CODE_TTL);
        inner.phone_codes.retain(|_, e| e.minted_at.elapsed() <= ttl);
        inner.phone_codes.insert(
            code.clone(),
            PhoneEntry { phone_number, country_code, minted_at: Instant::now(), used: false },
        );
        Ok(code)
    }
}

pub(super) fn random_bytes<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf)?;
    Ok(buf)
}

pub(super) fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
