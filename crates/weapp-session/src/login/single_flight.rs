//! One exchange per code: concurrent callers of a code share one call to
//! WeChat, run by a task of its own, and later callers get its answer.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::SessionError;
use crate::exchange::{ExchangeError, Exchanged};

use super::engine::SessionEngine;

/// WeChat's errcode for a code that was already exchanged.
pub(super) const ERRCODE_CODE_USED: i64 = 40163;
/// A WeChat code is valid for five minutes; exchanges are remembered as long.
pub(super) const CODE_LIFETIME: Duration = Duration::from_secs(300);
/// Upper bound on one exchange task, whatever the exchanger does (the WeChat
/// client's own `wechat.timeout` is far shorter), so a stuck exchanger cannot
/// hold a flight forever.
const EXCHANGE_TASK_BOUND: Duration = Duration::from_secs(60);
/// Most codes in flight or remembered at once.
pub(super) const MAX_CODES: u64 = 100_000;

/// Why a single-flight exchange failed: refused before WeChat, or by it.
#[derive(Clone, Debug)]
pub(super) enum LoginError {
    Session(SessionError),
    Exchange(ExchangeError),
}

/// The outcome of one code's exchange, `None` while WeChat is answering.
pub(super) type FlightResult = Option<Result<Arc<Exchanged>, ExchangeError>>;

/// One code's exchange: a spawned task owns the sender and publishes the
/// outcome; every caller of that code waits on a receiver. Dropping callers
/// never cancels the task.
pub(super) type Flight = tokio::sync::watch::Receiver<FlightResult>;

impl From<LoginError> for SessionError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::Session(e) => e,
            LoginError::Exchange(e) => SessionError::KeyExchangeFailed(e),
        }
    }
}

impl SessionEngine {
    /// Exchange `code` with WeChat at most once per instance: concurrent
    /// callers share one call, later callers get the remembered answer. The
    /// call runs in a task of its own, so a caller that goes away (the
    /// mini-program went to the background) neither loses the spent code's
    /// answer nor makes a waiter start a second exchange. Only the call that
    /// reaches WeChat counts against the rate limits.
    pub(super) async fn exchange(
        &self,
        code: &str,
        client: Option<IpAddr>,
    ) -> Result<Arc<Exchanged>, LoginError> {
        let mut flight = self
            .exchanges
            .try_get_with_by_ref(code, || self.start_exchange(code, client))
            .map_err(|e| LoginError::Session((*e).clone()))?;
        let outcome = flight.wait_for(Option::is_some).await.map(|o| o.clone());
        let outcome = match outcome {
            Ok(outcome) => outcome,
            // The task ended without an answer (it panicked): forget it so a
            // retry may exchange again.
            Err(_) => {
                forget_flight(&self.exchanges, code, &flight);
                None
            }
        };
        match outcome {
            Some(result) => result.map_err(LoginError::Exchange),
            None => Err(LoginError::Exchange(ExchangeError::Unreachable(
                "the exchange ended without an answer".into(),
            ))),
        }
    }

    /// Check the limits, then spawn the task that exchanges `code`.
    fn start_exchange(&self, code: &str, client: Option<IpAddr>) -> Result<Flight, SessionError> {
        self.check_rate(client)?;
        if let Some(budget) = &self.exchange_budget
            && budget.check().is_err()
        {
            return Err(SessionError::ExchangeBudgetSpent);
        }
        let (tx, rx) = tokio::sync::watch::channel(None);
        let exchanger = Arc::clone(&self.exchanger);
        let exchanges = self.exchanges.clone();
        let code = code.to_owned();
        let flight = rx.clone();
        tokio::spawn(async move {
            let result = match tokio::time::timeout(
                EXCHANGE_TASK_BOUND,
                exchanger.code2session(&code),
            )
            .await
            {
                Ok(Ok(exchanged)) => exchanged.checked().map(Arc::new),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(ExchangeError::Timeout),
            };
            let failed = result.is_err();
            tx.send_replace(Some(result));
            if failed {
                // Not cached: a retry may exchange again (WeChat answers
                // 40163 if the code was spent after all).
                forget_flight(&exchanges, &code, &flight);
            }
        });
        Ok(rx)
    }
}

/// The answer for a code that was already used, as WeChat gives it.
pub(super) fn code_used() -> SessionError {
    SessionError::KeyExchangeFailed(ExchangeError::WeChat {
        errcode: ERRCODE_CODE_USED,
        errmsg: "code been used".into(),
    })
}

/// A bounded cache whose entries live as long as a WeChat code.
pub(super) fn code_cache<V: Clone + Send + Sync + 'static>() -> moka::future::Cache<String, V> {
    moka::future::Cache::builder().max_capacity(MAX_CODES).time_to_live(CODE_LIFETIME).build()
}

/// Remove `code`'s exchange entry if it is still `flight` (not a newer one).
fn forget_flight(exchanges: &moka::sync::Cache<String, Flight>, code: &str, flight: &Flight) {
    use moka::ops::compute::Op;
    exchanges.entry_by_ref(code).and_compute_with(|entry| match entry {
        Some(e) if e.value().same_channel(flight) => Op::Remove,
        _ => Op::Nop,
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::super::config::{ExchangeBudget, SessionConfig, nz};
    use super::*;
    use crate::exchange::CodeExchanger;

    /// Fails the first call, then answers; counts calls.
    struct Flaky {
        calls: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl CodeExchanger for Flaky {
        async fn code2session(&self, _code: &str) -> Result<Exchanged, ExchangeError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(ExchangeError::Unreachable("connection reset".into()));
            }
            Ok(Exchanged {
                openid: "o_flaky".into(),
                session_key: "HyVFkGl5F5OQWJZZaNzBBg==".into(),
                unionid: None,
            })
        }
    }

    #[tokio::test]
    async fn a_failed_exchange_is_forgotten_and_a_success_remembered() {
        let flaky = Arc::new(Flaky { calls: std::sync::atomic::AtomicUsize::new(0) });
        let store = Arc::new(crate::MemoryStore::new(100));
        let sessions = SessionEngine::new(store, flaky.clone(), SessionConfig::default());
        assert!(sessions.exchange("code-1", None).await.is_err());
        // The failure is not cached: the retry reaches WeChat again.
        let got = sessions.exchange("code-1", None).await.map_err(SessionError::from).unwrap();
        assert_eq!(got.openid, "o_flaky");
        // The success is: no third call.
        sessions.exchange("code-1", None).await.map_err(SessionError::from).unwrap();
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_exchange_budget_refuses_before_wechat() {
        let flaky = Arc::new(Flaky { calls: std::sync::atomic::AtomicUsize::new(1) });
        let store = Arc::new(crate::MemoryStore::new(100));
        let config = SessionConfig {
            exchange_budget: Some(ExchangeBudget { per_second: nz(1), burst: nz(2) }),
            ..SessionConfig::default()
        };
        let sessions = SessionEngine::new(store, flaky.clone(), config);
        for code in ["c-1", "c-2"] {
            sessions.exchange(code, None).await.map_err(SessionError::from).unwrap();
        }
        let refused = sessions.exchange("c-3", None).await.map_err(SessionError::from);
        assert!(matches!(refused, Err(SessionError::ExchangeBudgetSpent)), "{refused:?}");
        // A code already exchanged costs nothing.
        sessions.exchange("c-1", None).await.map_err(SessionError::from).unwrap();
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
    }
}
