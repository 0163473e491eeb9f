//! Building the application from config and serving it until a signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::app::{AppState, FAKE_WECHAT_PATH, Shared, router};
use crate::clock::Clock;
use crate::config::{Config, DataStoreKind, StoreKind};
use crate::notices::{CachedNoticeStore, MemoryNoticeStore, MongoNoticeStore, NoticeStore};
use crate::pk::{CachedPkStore, MemoryPkStore, MongoPkStore, PkStore};
use crate::session::store::{
    MemoryStore, RedisClusterConfig, RedisStore, RedisStoreConfig, SessionStore,
};
use crate::session::{CodeExchanger, WxSessions};
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
    grace: Duration,
    tls: Option<Arc<ReloadableCert>>,
}

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Application {
    /// Bind the listener and assemble stores, WeChat client and routes.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        Self::build_with_clock(config, Clock::system()).await
    }

    /// [`Application::build`] with an injected clock (tests stand at any instant).
    pub async fn build_with_clock(config: Config, clock: Clock) -> Result<Self, StartError> {
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
        let client = WeChatClient::new(WeChatConfig {
            api_base,
            app_id: config.wechat.app_id.clone(),
            app_secret: secret,
            connect_timeout: config.wechat.connect_timeout,
            timeout: config.wechat.timeout,
        })
        .map_err(|e| StartError::Component(format!("wechat client: {e}")))?;

        let store: Arc<dyn SessionStore> = match config.session.store {
            StoreKind::Memory => Arc::new(MemoryStore::new(config.session.memory_max_entries)),
            StoreKind::Redis => Arc::new(
                if config.redis.is_cluster() {
                    RedisStore::new_cluster(RedisClusterConfig {
                        nodes: config
                            .redis
                            .cluster_nodes
                            .iter()
                            .map(|n| n.expose_secret().to_owned())
                            .collect(),
                        prefix: config.redis.prefix.clone(),
                        op_timeout: config.redis.timeout,
                    })
                } else {
                    RedisStore::new(RedisStoreConfig {
                        url: config.redis.url.expose_secret().to_owned(),
                        prefix: config.redis.prefix.clone(),
                        op_timeout: config.redis.timeout,
                    })
                }
                .map_err(|e| StartError::Component(format!("redis store: {e}")))?,
            ),
        };
        let mut session_config = config.session_config();
        // The admin routes carry their own bearer token, not a user's.
        session_config.ignore.push("/admin/*".into());
        if fake.is_some() {
            session_config.ignore.push(format!("{FAKE_WECHAT_PATH}/*"));
        }
        let (pk, notices) = data_stores(&config).await?;
        let tokens = AccessTokens::new(client.clone(), store.clone());
        let exchanger: Arc<dyn CodeExchanger> = Arc::new(client);
        let sessions = Arc::new(WxSessions::new(store, exchanger, session_config));
        let state = AppState::from(Shared {
            sessions,
            tokens,
            app_id: config.wechat.app_id.clone(),
            pk,
            notices,
            pk_tz: config.pk.tz()?,
            pk_ranking_limit: config.pk.ranking_limit,
            content_security: config.notices.content_security,
            admin_token: config.notices.admin_token.clone(),
            message_token: config.message.token.clone(),
            clock,
            trusted_proxies: config.server.trusted_proxies.clone().into(),
            open_data: config.open_data,
        });
        let router = router(state, &config.server.base_path, fake);
        tracing::info!(
            %local_addr,
            mode = ?config.mode,
            store = ?config.session.store,
            fake_wechat = config.wechat.fake,
            "gateway built"
        );
        Ok(Self { listener, router, local_addr, grace: config.server.shutdown_grace, tls })
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
        if let Some(certs) = self.tls.clone() {
            return self.serve_tls(certs, signal).await;
        }
        let stopping = Arc::new(tokio::sync::Notify::new());
        let notify = stopping.clone();
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(self.listener, service).with_graceful_shutdown(async move {
            signal.await;
            tracing::info!("shutting down: draining in-flight requests");
            notify.notify_one();
        });
        let grace = self.grace;
        tokio::select! {
            result = server.into_future() => result,
            () = async { stopping.notified().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "grace period over; closing remaining connections");
                Ok(())
            }
        }
    }
}

impl Application {
    /// The HTTPS accept loop: TLS handshake (bounded), then HTTP/1.1 or h2 as
    /// ALPN chose; on `signal` stop accepting and drain within the grace period.
    async fn serve_tls(
        self,
        certs: Arc<ReloadableCert>,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::server::conn::auto::Builder;
        use hyper_util::server::graceful::GracefulShutdown;
        use hyper_util::service::TowerToHyperService;

        let config = crate::tls::server_config(certs.clone())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let graceful = GracefulShutdown::new();
        let builder = Builder::new(TokioExecutor::new());
        tokio::pin!(signal);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // e.g. EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut signal => break,
            };
            let acceptor = acceptor.clone();
            let service = self.router.clone().layer(axum::Extension(ConnectInfo(peer)));
            let builder = builder.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let stream =
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                let connection = builder.serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    TowerToHyperService::new(service),
                );
                if let Err(e) = watcher.watch(connection.into_owned()).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        tracing::info!("shutting down: draining in-flight requests");
        drop(self.listener);
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(self.grace) => {
                tracing::warn!(grace = ?self.grace, "grace period over; closing remaining connections");
            }
        }
        Ok(())
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
            with_board_cache(config, MemoryPkStore::new()),
            with_feed_cache(config, MemoryNoticeStore::new()),
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
