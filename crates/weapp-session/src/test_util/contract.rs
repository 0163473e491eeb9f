//! Running the store contract: every case on a store of its own, all cases at
//! once, each failure (a panic or a hang) reported under its case's name.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{session_cases, shared_cases};
use crate::{SessionStore, SharedStore};

/// How long one case may run before it counts as failed (a store that never
/// answers). The slowest case takes about four seconds.
pub const CASE_BOUND: Duration = Duration::from_secs(60);

/// One case: its name and how to run it on a store.
pub(super) type Case<S> = (&'static str, fn(Arc<S>) -> BoxFuture<'static, ()>);

/// `[(name, run)]` for a list of `async fn(Arc<S>)` cases.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        &[$((stringify!($case), |store| Box::pin($case(store)))),*]
    };
}
pub(super) use cases;

/// A store that is both: what the cases on the two traits together take.
pub(super) trait Both: SessionStore + SharedStore {}
impl<T: SessionStore + SharedStore> Both for T {}

/// Run every [`SessionStore`] case of the contract against stores made by
/// `new_store`.
///
/// `new_store` is called once per case with the case's name and must give a
/// store that no other case sees: a fresh instance, or a shared backend under
/// a key prefix (or table, or database) made from the name. The cases run
/// concurrently, from a Tokio runtime that must be running (`#[tokio::test]`;
/// a multi-threaded one exercises the concurrency cases for real), and take
/// about four seconds: some wait for TTLs to run out, which the store must
/// honour to the second.
///
/// `Err` names every case that failed and why (its panic message, or that it
/// ran longer than [`CASE_BOUND`]); a failing case's panic is also printed by
/// the panic hook, with its location.
///
/// ```
/// use weapp_session::MemoryStore;
/// use weapp_session::test_util::check_session_store;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// check_session_store(|_case| async { MemoryStore::new(10_000) }).await.unwrap();
/// # }
/// ```
pub async fn check_session_store<S, F, Fut>(mut new_store: F) -> Result<(), ContractFailure>
where
    S: SessionStore,
    F: FnMut(&'static str) -> Fut,
    Fut: Future<Output = S>,
{
    let mut runs = Vec::new();
    for &(name, case) in session_cases::CASES {
        let store: Arc<dyn SessionStore> = Arc::new(new_store(name).await);
        runs.push((name, case(store)));
    }
    run(runs).await
}

/// Run every [`SharedStore`] case of the contract (shared values and locks)
/// against stores made by `new_store`; see [`check_session_store`] for what
/// `new_store` must give and how the cases run.
///
/// ```
/// use weapp_session::MemoryStore;
/// use weapp_session::test_util::check_shared_store;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// check_shared_store(|_case| async { MemoryStore::new(10_000) }).await.unwrap();
/// # }
/// ```
pub async fn check_shared_store<S, F, Fut>(mut new_store: F) -> Result<(), ContractFailure>
where
    S: SharedStore,
    F: FnMut(&'static str) -> Fut,
    Fut: Future<Output = S>,
{
    let mut runs = Vec::new();
    for &(name, case) in shared_cases::CASES {
        let store: Arc<dyn SharedStore> = Arc::new(new_store(name).await);
        runs.push((name, case(store)));
    }
    run(runs).await
}

/// The whole contract for a backend that implements both traits: the
/// [`SessionStore`] cases, the [`SharedStore`] cases, and the cases proving
/// the two never read each other's keys. See [`check_session_store`] for what
/// `new_store` must give and how the cases run.
///
/// ```
/// use weapp_session::MemoryStore;
/// use weapp_session::test_util::check_store;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// check_store(|_case| async { MemoryStore::new(10_000) }).await.unwrap();
/// # }
/// ```
pub async fn check_store<S, F, Fut>(mut new_store: F) -> Result<(), ContractFailure>
where
    S: SessionStore + SharedStore,
    F: FnMut(&'static str) -> Fut,
    Fut: Future<Output = S>,
{
    let mut runs = Vec::new();
    for &(name, case) in session_cases::CASES {
        let store: Arc<dyn SessionStore> = Arc::new(new_store(name).await);
        runs.push((name, case(store)));
    }
    for &(name, case) in shared_cases::CASES {
        let store: Arc<dyn SharedStore> = Arc::new(new_store(name).await);
        runs.push((name, case(store)));
    }
    for &(name, case) in shared_cases::BOTH {
        let store: Arc<dyn Both> = Arc::new(new_store(name).await);
        runs.push((name, case(store)));
    }
    run(runs).await
}

/// Spawn every case, bounded by [`CASE_BOUND`], and collect the failures.
async fn run(runs: Vec<(&'static str, BoxFuture<'static, ()>)>) -> Result<(), ContractFailure> {
    let total = runs.len();
    let tasks: Vec<_> = runs
        .into_iter()
        .map(|(name, case)| (name, tokio::spawn(tokio::time::timeout(CASE_BOUND, case))))
        .collect();
    let mut failed = Vec::new();
    for (name, task) in tasks {
        let message = match task.await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => format!("did not finish within {} s", CASE_BOUND.as_secs()),
            Err(e) => panic_message(e),
        };
        failed.push(FailedCase { name, message });
    }
    if failed.is_empty() { Ok(()) } else { Err(ContractFailure { total, failed }) }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => match payload.downcast::<String>() {
            Ok(text) => *text,
            Err(payload) => match payload.downcast::<&'static str>() {
                Ok(text) => (*text).to_owned(),
                Err(_) => "panicked".to_owned(),
            },
        },
        Err(e) => format!("its task ended without finishing: {e}"),
    }
}

/// The store contract's cases that failed. `Display` (and `Debug`, so that
/// `.unwrap()` reads well) lists each one with why it failed.
pub struct ContractFailure {
    total: usize,
    failed: Vec<FailedCase>,
}

impl ContractFailure {
    /// The cases that failed, in the contract's order.
    pub fn failed(&self) -> &[FailedCase] {
        &self.failed
    }

    /// How many cases ran, passed or not.
    pub fn total(&self) -> usize {
        self.total
    }
}

impl std::fmt::Display for ContractFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {} store contract cases failed:", self.failed.len(), self.total)?;
        for case in &self.failed {
            write!(f, "\n- {}: {}", case.name, case.message)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for ContractFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for ContractFailure {}

/// One failed case of the store contract.
#[derive(Clone, Debug)]
pub struct FailedCase {
    name: &'static str,
    message: String,
}

impl FailedCase {
    /// The case's name, e.g. `sessions_expire_after_their_ttl`: the name
    /// `new_store` was called with.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Why it failed: the assertion's message, or that it did not finish.
    pub fn message(&self) -> &str {
        &self.message
    }
}
