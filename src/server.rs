//! Building the application from config and serving it until a signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::app::{AppState, FAKE_WECHAT_PATH, Shared, router};
use crate::clock::Clock;
use crate::config::{Config, DataStoreKind, ServerConfig, StoreKind};
use crate::notices::{CachedNoticeStore, MemoryNoticeStore, MongoNoticeStore, NoticeStore};
use crate::pk::{CachedPkStore, MemoryPkStore, MongoPkStore, PkStore};
use crate::session::store::{
    MemoryStore, RedisClusterConfig, RedisStore, RedisStoreConfig, SessionStore, SharedStore,
};
use crate::session::{CodeExchanger, WxSessionLayerBuilder};
use crate::tls::ReloadableCert;
use crate::wechat::FakeWeChat;
use crate::wechat::{AccessTokens, WeChatClient, WeChatConfig};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A component could not be built.
    #[error("{0}")]
    Component(String),
}

/// A built gateway: bound, ready to serve.
pub struct Application {
    listener: TcpListener,
    router: Router,
    local_addr: SocketAddr,
    server: ServerConfig,
    tls: Option<Arc<ReloadableCert>>,
}

impl Application {
    /// Bind the listener and assemble stores, WeChat client and routes.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        Self::build_with_clock(config, Clock::system()).await
    }

    /// [`Application::build`] with an injected clock (tests stand at any instant).
    pub async fn build_with_clock(config: Config, clock: Clock) -> Result<Self, StartError> {
        // The gateway is the application, so it may choose the process's
        // rustls provider (its libraries never do): ring, unless one is set.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Certificates first: a bad cert or key must stop the start, clearly.
        let tls = match &config.server.tls {
            Some(cfg) => Some(Arc::new(
                ReloadableCert::load(cfg).map_err(|e| StartError::Component(e.to_string()))?,
            )),
            None => None,
        };
        let addr = config.server.listen;
        let listener =
            TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
        let local_addr =
            listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;

        let secret = config.app_secret()?;
        let fake = config
            .wechat
            .fake
            .then(|| FakeWeChat::new(config.wechat.app_id.clone(), secret.expose_secret()));
        if let Some(fake) = &fake {
            fake.set_risky_words(config.wechat.fake_risky_words.clone());
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let api_base = match fake {
            Some(_) => format!("{scheme}://{local_addr}{FAKE_WECHAT_PATH}"),
            None => config.wechat.api_base.clone(),
        };
        let client = WeChatClient::new(
            WeChatConfig::new(config.wechat.app_id.clone(), secret)
                .with_api_base(api_base)
                .with_connect_timeout(config.wechat.connect_timeout)
                .with_timeout(config.wechat.timeout),
        )
        .map_err(|e| StartError::Component(format!("wechat client: {e}")))?;

        // One backend for the sessions and for the values every instance
        // shares (the access token), seen through its two traits.
        let (store, shared): (Arc<dyn SessionStore>, Arc<dyn SharedStore>) =
            match config.session.store {
                StoreKind::Memory => {
                    let memory = Arc::new(MemoryStore::new(config.session.memory_max_entries));
                    (memory.clone(), memory)
                }
                StoreKind::Redis => {
                    let redis = Arc::new(
                        if config.redis.is_cluster() {
                            RedisStore::new_cluster(
                                RedisClusterConfig::new(
                                    config.redis.cluster_nodes.iter().map(|n| n.expose_secret()),
                                )
                                .with_prefix(config.redis.prefix.clone())
                                .with_op_timeout(config.redis.timeout),
                            )
                        } else {
                            RedisStore::new(
                                RedisStoreConfig::new(config.redis.url.expose_secret())
                                    .with_prefix(config.redis.prefix.clone())
                                    .with_op_timeout(config.redis.timeout),
                            )
                        }
                        .map_err(|e| StartError::Component(format!("redis store: {e}")))?,
                    );
                    (redis.clone(), redis)
                }
            };
        let (pk, notices) = data_stores(&config).await?;
        let tokens = AccessTokens::new(client.clone(), shared);
        let exchanger: Arc<dyn CodeExchanger> = Arc::new(client);
        let layer =
            config.session_layer(WxSessionLayerBuilder::from_arcs(store, exchanger)).build();
        let sessions = layer.engine().clone();
        let state = AppState::from(Shared {
            sessions,
            tokens,
            app_id: config.wechat.app_id.clone(),
            pk,
            notices,
            pk_tz: config.pk.tz()?,
            pk_ranking_limit: config.pk.ranking_limit,
            pk_retention_days: config.pk.retention_days,
            content_security: config.notices.content_security,
            admin_token: config.notices.admin_token.clone(),
            message_token: config.message.token.clone(),
            message_max_clock_skew: config.message.max_clock_skew,
            clock,
            trusted_proxies: config.server.trusted_proxies.clone().into(),
            limits: crate::limits::Limits::from_config(&config)?,
            open_data: config.open_data,
        });
        let router = router(state, layer, &config.server, fake);
        if config.server.request_timeout <= config.wechat.timeout {
            tracing::warn!(
                request_timeout = ?config.server.request_timeout,
                wechat_timeout = ?config.wechat.timeout,
                "server.request_timeout does not outlast wechat.timeout: a slow login will be cut \
                 after WeChat spent its code"
            );
        }
        tracing::info!(
            %local_addr,
            mode = ?config.mode,
            store = ?config.session.store,
            fake_wechat = config.wechat.fake,
            "gateway built"
        );
        Ok(Self { listener, router, local_addr, server: config.server, tls })
    }

    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// Serve until SIGTERM or SIGINT, then drain for at most the grace period.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_with_shutdown(shutdown_signal()).await
    }

    /// Serve until `signal` completes, then drain for at most the grace period.
    pub async fn run_with_shutdown(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        crate::tls::reload_on_sighup(self.tls.clone());
        let acceptor = match &self.tls {
            Some(certs) => Some(tokio_rustls::TlsAcceptor::from(
                crate::tls::server_config(certs.clone())
                    .map_err(|e| std::io::Error::other(e.to_string()))?,
            )),
            None => None,
        };
        serve_connections(self.listener, self.router, acceptor, &self.server, signal).await;
        Ok(())
    }
}

/// How long a connection with nothing in flight may take to close on its own
/// once it has been asked to (idle timeout or shutdown) before it is dropped:
/// time to flush the last response, not to wait for a slow client.
const CLOSE_LINGER: Duration = Duration::from_millis(500);

/// The longest pause after a failed `accept()` (e.g. EMFILE).
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// At most one "accept failed" warning per this interval.
const ACCEPT_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// What the accept loop tells its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Serve as usual.
    Serving,
    /// Shutting down: finish in-flight requests, close everything else now.
    Draining,
    /// The grace period is over: close at once.
    Closing,
}

/// The one accept loop, plain or TLS: at most `server.max_connections`
/// connections (a permit is taken before `accept()`, so excess clients wait
/// in the listen queue), HTTP/1.1 or h2 with hyper's timers on. On `signal`
/// it stops accepting, closes idle and half-sent connections at once and
/// gives in-flight requests up to `server.shutdown_grace`.
async fn serve_connections(
    listener: TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    server: &ServerConfig,
    signal: impl Future<Output = ()> + Send + 'static,
) {
    let builder = Arc::new(http_builder(server));
    let limits = ConnLimits {
        header_read_timeout: server.header_read_timeout,
        idle_timeout: server.idle_timeout,
        // The request itself is bounded by `request_timeout` (up to its
        // response head); writing the answer gets `idle_timeout` more.
        busy_timeout: server.request_timeout.saturating_add(server.idle_timeout),
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(server.max_connections));
    let (phase, _) = tokio::sync::watch::channel(Phase::Serving);
    let mut failures = AcceptFailures::default();
    tokio::pin!(signal);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut signal => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut signal => break,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => {
                failures.reset();
                conn
            }
            Err(e) => {
                // e.g. EMFILE: back off instead of spinning (the permit is
                // returned meanwhile); log once per interval, not per try.
                let pause = failures.failed(&e);
                tokio::select! {
                    () = tokio::time::sleep(pause) => continue,
                    () = &mut signal => break,
                }
            }
        };
        let conn = Conn {
            builder: builder.clone(),
            router: router.clone(),
            peer,
            limits,
            phase: phase.subscribe(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => conn.serve(tcp).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp));
                    match handshake.await {
                        Ok(Ok(stream)) => conn.serve(stream).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    tracing::info!("shutting down: draining in-flight requests");
    drop(listener);
    phase.send_replace(Phase::Draining);
    let grace = server.shutdown_grace;
    // Every connection holds a permit: all of them back means all closed.
    let all = u32::try_from(server.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, permits.acquire_many(all)).await.is_err() {
        tracing::warn!(?grace, "grace period over; closing remaining connections");
        phase.send_replace(Phase::Closing);
    }
}

/// hyper's connection builder with the `[server]` timers and limits.
fn http_builder(server: &ServerConfig) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    use hyper_util::rt::TokioTimer;
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .keep_alive(true)
        .max_buf_size(server.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(server.h2_keepalive_interval)
        .keep_alive_timeout(server.h2_keepalive_timeout)
        .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// The per-connection timeouts the accept loop enforces itself.
#[derive(Clone, Copy, Debug)]
struct ConnLimits {
    /// Until its first request, a connection must deliver one within this.
    header_read_timeout: Duration,
    /// After that, it may sit with nothing in flight for this long.
    idle_timeout: Duration,
    /// Longest a connection may stay busy with nothing new happening (no
    /// request starting or finishing): a client that never reads its answer
    /// (an h1 socket it does not drain, an h2 window it keeps at zero) is
    /// dropped after this instead of holding its connection for ever.
    busy_timeout: Duration,
}

/// One accepted connection, before its IO is known (plain or TLS).
struct Conn {
    builder: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    router: Router,
    peer: SocketAddr,
    limits: ConnLimits,
    phase: tokio::sync::watch::Receiver<Phase>,
}

impl Conn {
    /// Serve `io` until the client closes it, it stays idle too long, or
    /// shutdown closes it.
    async fn serve<I>(mut self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        use http_body_util::BodyExt;
        // Requests in flight on this connection (counted from the call of
        // the service until hyper drops the response body, fully written)
        // and requests started on it.
        let (in_flight, mut activity) = tokio::sync::watch::channel((0usize, 0u64));
        let in_flight = Arc::new(in_flight);
        let (router, peer) = (self.router.clone(), self.peer);
        let drain = self.phase.clone();
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let guard = InFlight::enter(in_flight.clone());
            // A body still arriving when shutdown starts is cut at once, so a
            // client trickling it cannot hold SIGTERM for the grace period.
            let mut request = request.map(|body| DrainBody::new(body, &drain));
            // The access log reads the peer from here (and sets the ClientIp
            // the session layer rate-limits by).
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            let router = router.clone();
            async move {
                let response = tower::ServiceExt::oneshot(router, request).await;
                response.map(|r| {
                    r.map(move |body| {
                        axum::body::Body::new(body.map_frame(move |frame| {
                            let _in_flight = &guard;
                            frame
                        }))
                    })
                })
            }
        });
        let conn = self.builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut closing = false;
        loop {
            let (in_flight, started) = *activity.borrow_and_update();
            let (busy, served) = (in_flight > 0, started > 0);
            let phase = *self.phase.borrow_and_update();
            if phase == Phase::Closing {
                return;
            }
            if phase == Phase::Draining && !closing {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            let wait = match (busy, closing, served) {
                (true, _, _) => self.limits.busy_timeout,
                (false, true, _) => CLOSE_LINGER,
                (false, false, true) => self.limits.idle_timeout,
                (false, false, false) => self.limits.header_read_timeout,
            };
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                Ok(()) = activity.changed() => {}
                Ok(()) = self.phase.changed() => {}
                () = tokio::time::sleep(wait) => {
                    if busy {
                        tracing::debug!(%peer, "dropping a connection whose answer is not being read");
                        return;
                    }
                    if closing {
                        return;
                    }
                    tracing::debug!(%peer, served, "closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// A request body that ends with [`DrainCut`] as soon as shutdown starts
/// while it is still arriving. A body already complete is unaffected.
struct DrainBody {
    inner: Incoming,
    /// The accept loop's phase, kept only for a body still to come (a GET's
    /// empty body needs none).
    phase: Option<tokio::sync::watch::Receiver<Phase>>,
    /// Resolves when shutdown starts; made from `phase` on the first poll
    /// that has to wait for the client (most bodies never need it).
    draining: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl DrainBody {
    fn new(inner: Incoming, phase: &tokio::sync::watch::Receiver<Phase>) -> Self {
        let phase = (!http_body::Body::is_end_stream(&inner)).then(|| phase.clone());
        Self { inner, phase, draining: None }
    }
}

/// The error of a request body cut by shutdown (answered like a body that
/// arrived too slowly: `408 ERR_REQUEST_TIMEOUT`).
#[derive(Debug)]
pub struct DrainCut;

impl std::fmt::Display for DrainCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the server is shutting down and the request body was still arriving")
    }
}

impl std::error::Error for DrainCut {}

impl http_body::Body for DrainBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => return Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {}
        }
        if this.draining.is_none()
            && let Some(mut phase) = this.phase.take()
        {
            this.draining = Some(Box::pin(async move {
                let _ = phase.wait_for(|p| *p >= Phase::Draining).await;
            }));
        }
        let Some(draining) = this.draining.as_mut() else { return Poll::Pending };
        match draining.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(DrainCut)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's (requests in flight, requests started).
type Activity = tokio::sync::watch::Sender<(usize, u64)>;

/// Counts one request in flight on a connection while it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(counter: Arc<Activity>) -> Self {
        counter.send_modify(|(n, started)| {
            *n += 1;
            *started = started.saturating_add(1);
        });
        Self(counter)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|(n, _)| *n = n.saturating_sub(1));
    }
}

/// Back-off and log suppression for failing `accept()` calls.
#[derive(Default)]
struct AcceptFailures {
    pause: Duration,
    last_warned: Option<std::time::Instant>,
    suppressed: u64,
}

impl AcceptFailures {
    /// A failure: how long to pause (doubling up to [`ACCEPT_BACKOFF_MAX`]);
    /// warns at most once per [`ACCEPT_WARN_INTERVAL`].
    fn failed(&mut self, e: &std::io::Error) -> Duration {
        self.pause = (self.pause * 2).clamp(Duration::from_millis(10), ACCEPT_BACKOFF_MAX);
        match self.last_warned {
            Some(at) if at.elapsed() < ACCEPT_WARN_INTERVAL => self.suppressed += 1,
            _ => {
                tracing::warn!(
                    error = %e,
                    suppressed = self.suppressed,
                    "accept failed; backing off (new connections wait in the listen queue)"
                );
                self.last_warned = Some(std::time::Instant::now());
                self.suppressed = 0;
            }
        }
        self.pause
    }

    /// A success: the next failure starts from the shortest pause.
    fn reset(&mut self) {
        self.pause = Duration::ZERO;
    }
}

/// The PK and notice stores the config asks for. MongoDB indexes are created
/// before serving; when MongoDB is down at start-up the gateway still starts
/// (session routes work, data routes answer 503) and index creation is
/// retried in the background until it succeeds.
async fn data_stores(
    config: &Config,
) -> Result<(Arc<dyn PkStore>, Arc<dyn NoticeStore>), StartError> {
    match config.data.store {
        DataStoreKind::Memory => Ok((
            with_board_cache(
                config,
                MemoryPkStore::with_capacity(config.data.memory_max_pk_records),
            ),
            with_feed_cache(
                config,
                MemoryNoticeStore::with_capacity(config.data.memory_max_notices),
            ),
        )),
        DataStoreKind::Mongodb => {
            let db = crate::mongo::connect(&config.mongodb)
                .await
                .map_err(|e| StartError::Component(format!("mongodb: {e}")))?;
            let op_timeout = config.mongodb.op_timeout;
            let pk = MongoPkStore::new(db.clone(), op_timeout);
            let notices = MongoNoticeStore::new(db, op_timeout);
            let retention = config.pk.retention_days;
            let init = {
                let (pk, notices) = (pk.clone(), notices.clone());
                move || {
                    let (pk, notices) = (pk.clone(), notices.clone());
                    async move {
                        pk.init(retention).await?;
                        notices.init().await
                    }
                }
            };
            if let Err(e) = init().await {
                tracing::warn!(error = %e, "mongodb not ready at start-up; data routes answer 503 until it is");
                tokio::spawn(async move {
                    let mut delay = Duration::from_millis(500);
                    loop {
                        tokio::time::sleep(delay).await;
                        match init().await {
                            Ok(()) => {
                                tracing::info!("mongodb indexes ready");
                                break;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "mongodb indexes not ready; retrying");
                                delay = (delay * 2).min(Duration::from_secs(30));
                            }
                        }
                    }
                });
            }
            Ok((with_board_cache(config, pk), with_feed_cache(config, notices)))
        }
    }
}

/// `store` behind the feed-head cache, unless `notices.feed_cache_ttl` is zero.
fn with_feed_cache(config: &Config, store: impl NoticeStore) -> Arc<dyn NoticeStore> {
    match config.notices.feed_cache_ttl {
        ttl if ttl.is_zero() => Arc::new(store),
        ttl => Arc::new(CachedNoticeStore::new(store, ttl, crate::notices::routes::MAX_LIMIT)),
    }
}

/// `store` behind the PK board cache, unless `pk.board_cache_ttl` is zero.
fn with_board_cache(config: &Config, store: impl PkStore) -> Arc<dyn PkStore> {
    match config.pk.board_cache() {
        Some(cfg) => Arc::new(CachedPkStore::new(store, cfg)),
        None => Arc::new(store),
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (what systemd sends).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
