//! `WxSessionLayer`, its builder, and its service.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::Request;
use http_body_util::Either;
use tower_layer::Layer;
use tower_service::Service;

use super::error::EnvelopeBody;
use super::exchange::CodeExchanger;
use super::identity::{LayerSeen, UserTag};
use super::l1::L1Config;
use super::login::{ExchangeBudget, LoginRateLimit, SessionConfig, SessionEngine};
use super::store::SessionStore;

/// The client address a trusted front has established (see
/// [`crate::ClientAddrLayer`]); the layer rate-limits logins by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Tower layer that recognises WeChat mini-program users (both dialects) and
/// puts a [`WxSession`](crate::WxSession) into the request extensions.
///
/// Rejections are `Ok` responses in the error envelope; the service's error
/// type is the inner service's. Build one with [`WxSessionLayer::builder`].
///
/// ```
/// use std::sync::Arc;
/// use weapp_session::{MemoryStore, WxSessionLayer};
/// # use weapp_session::{CodeExchanger, ExchangeError, Exchanged};
/// # struct WeChat;
/// # #[async_trait::async_trait]
/// # impl CodeExchanger for WeChat {
/// #     async fn code2session(&self, _: &str) -> Result<Exchanged, ExchangeError> {
/// #         Err(ExchangeError::Timeout)
/// #     }
/// # }
/// let layer = WxSessionLayer::builder(MemoryStore::new(10_000), WeChat).build();
/// assert!(!layer.engine().is_ignored("/applet/hello"));
/// ```
#[derive(Clone, Debug)]
pub struct WxSessionLayer {
    engine: Arc<SessionEngine>,
}

impl WxSessionLayer {
    /// Start building a layer over `store`, exchanging `wx.login()` codes
    /// with `exchanger` (for example `weapp_wechat::WeChatClient`). The
    /// layer keeps both behind its own `Arc`s.
    ///
    /// ```
    /// use weapp_session::{MemoryStore, WxSessionLayer};
    /// # use weapp_session::{CodeExchanger, ExchangeError, Exchanged};
    /// # struct WeChat;
    /// # #[async_trait::async_trait]
    /// # impl CodeExchanger for WeChat {
    /// #     async fn code2session(&self, _: &str) -> Result<Exchanged, ExchangeError> { Err(ExchangeError::Timeout) }
    /// # }
    /// let builder = WxSessionLayer::builder(MemoryStore::new(10_000), WeChat);
    /// let layer = builder.build();
    /// # let _ = layer;
    /// ```
    pub fn builder(
        store: impl SessionStore,
        exchanger: impl CodeExchanger,
    ) -> WxSessionLayerBuilder {
        WxSessionLayerBuilder::from_arcs(Arc::new(store), Arc::new(exchanger))
    }

    /// The session engine behind this layer: mount its token routes with
    /// [`crate::token_routes`], revoke sessions, reach the store. Clones of
    /// the layer share it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use weapp_session::{MemoryStore, WxSessionLayer};
    /// # use weapp_session::{CodeExchanger, ExchangeError, Exchanged};
    /// # struct WeChat;
    /// # #[async_trait::async_trait]
    /// # impl CodeExchanger for WeChat {
    /// #     async fn code2session(&self, _: &str) -> Result<Exchanged, ExchangeError> { Err(ExchangeError::Timeout) }
    /// # }
    /// let layer = WxSessionLayer::builder(MemoryStore::new(100), WeChat).build();
    /// assert!(Arc::ptr_eq(layer.engine(), layer.clone().engine()));
    /// ```
    pub fn engine(&self) -> &Arc<SessionEngine> {
        &self.engine
    }
}

/// Builds a [`WxSessionLayer`]. Every setting has a sensible default.
#[must_use]
pub struct WxSessionLayerBuilder {
    store: Arc<dyn SessionStore>,
    exchanger: Arc<dyn CodeExchanger>,
    config: SessionConfig,
}

impl std::fmt::Debug for WxSessionLayerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WxSessionLayerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WxSessionLayerBuilder {
    /// A builder over a store and an exchanger that are already shared (the
    /// gateway hands the same store to its access-token cache).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use weapp_session::{CodeExchanger, ExchangeError, Exchanged, MemoryStore, WxSessionLayerBuilder};
    /// # struct WeChat;
    /// # #[async_trait::async_trait]
    /// # impl CodeExchanger for WeChat {
    /// #     async fn code2session(&self, _: &str) -> Result<Exchanged, ExchangeError> { Err(ExchangeError::Timeout) }
    /// # }
    /// let store = Arc::new(MemoryStore::new(10_000));
    /// let layer = WxSessionLayerBuilder::from_arcs(store.clone(), Arc::new(WeChat)).build();
    /// # let _ = layer;
    /// ```
    pub fn from_arcs(store: Arc<dyn SessionStore>, exchanger: Arc<dyn CodeExchanger>) -> Self {
        Self { store, exchanger, config: SessionConfig::default() }
    }

    /// How long a compat (`X-WX-Code`) session lives (default 24 h).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use weapp_session::{CodeExchanger, ExchangeError, Exchanged, MemoryStore, WxSessionLayer};
    /// # struct WeChat;
    /// # #[async_trait::async_trait]
    /// # impl CodeExchanger for WeChat {
    /// #     async fn code2session(&self, _: &str) -> Result<Exchanged, ExchangeError> { Err(ExchangeError::Timeout) }
    /// # }
    /// let layer = WxSessionLayer::builder(MemoryStore::new(100), WeChat)
    ///     .with_compat_ttl(Duration::from_secs(2 * 3600))
    ///     .build();
    /// assert_eq!(layer.engine().config().compat_ttl(), Duration::from_secs(7200));
    /// ```
    pub fn with_compat_ttl(mut self, ttl: Duration) -> Self {
        self.config.compat_ttl = ttl;
        self
    }

    /// Sliding idle TTL of a token session: each use extends it (default 7 days).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use weapp_session::{CodeExchanger, ExchangeError, Exchanged, MemoryStore, WxSessionLayer};
    /// # struct WeChat;
    /// # #[async_trait::async_trait]
    /// # impl CodeExchanger for WeChat {
    /// #     async fn code2session(&self, _: &str) -> Result<Exchanged, ExchangeError> { Err(ExchangeError::Timeout) }
    /// # }
    /// let layer = WxSessionLayer::builder(MemoryStore::new(100), WeChat)
    ///     .with_token_idle_ttl(Duration::from_secs(3600))
    ///     .build();
    /// assert_eq!(layer.engine().config().token_idle_ttl(), Duration::from_secs(3600));
    /// ```
    pub fn with_token_idle_ttl(mut self, ttl: Duration) -> Self {
        self.config.token_idle_ttl = ttl;
        self
    }

    /// Absolute lifetime of a token session, however often it is used
    /// (default 30 days).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use weapp_session::{CodeExchanger, ExchangeError, Exchanged, MemoryStore, WxSessionLayer};
    /// # struct WeChat;
    /// # #[async_trait::async_trait]
    /// # impl CodeExchanger for WeChat {
    /// #     async fn code2session(&self, _: &str) -> Result<Exchanged, ExchangeError> { Err(ExchangeError::Timeout) }
    /// # }
    /// let layer = WxSessionLayer::builder(MemoryStore::new(100), WeChat)
    ///     .with_token_max_lifetime(Duration::from_secs(86_400))
    ///     .build();
    /// assert_eq!(layer.engine().config().token_max_lifetime(), Duration::from_secs(86_400));
    /// ```
    pub fn with_token_max_lifetime(mut self, lifetime: Duration) -> Self {
        self.config.token_max_lifetime = lifetime;
        self
    }

    /// Paths the layer leaves alone: exact paths, or prefixes ending in `*`
    /// (replaces the default `["/healthz", "/readyz"]`).
    ///
    /// ```
    /// # use weapp_session::{CodeExchanger, ExchangeError, Exchanged, MemoryStore, WxSessionLayer};
    /// # struct WeChat;
    /// # #[async_trait::async_trait]
    /// # impl CodeExchanger for WeChat {
    /// #     async fn code2session(&self, _: &str) -> Result<Exchanged, ExchangeError> { Err(ExchangeError::Timeout) }
    /// # }
    /// let layer = WxSessionLayer::builder(MemoryStore::new(100), WeChat)
    ///     .with_ignore(["/healthz", "/static/*"])
    ///     .build();
    /// assert!(layer.engine().is_ignored("/static/logo.png"));
    /// assert!(!layer.engine().is_ignored("/applet/me"));
    /// ```
    pub fn with_ignore<I, P>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.config.ignore = paths.into_iter().map(Into::into).collect();
        self
    }

    /// The in-process L1 cache of recently served sessions (off by default).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use weapp_session::{CodeExchanger, ExchangeError, Exchanged, L1Config, MemoryStore, WxSessionLayer};
    /// # struct WeChat;
    /// # #[async_trait::async_trait]
    /// # impl CodeExchanger for WeChat {
    /// #     async fn code2session(&self, _: &str) -> Result<Exchanged, ExchangeError> { Err(ExchangeError::Timeout) }
    /// # }
    /// let layer = WxSessionLayer::builder(MemoryStore::new(100), WeChat)
    ///     .with_l1(L1Config::new(Duration::from_secs(1), 10_000))
    ///     .build();
    /// assert!(layer.engine().config().l1().is_some());
    /// ```
    pub fn with_l1(mut self, l1: L1Config) -> Self {
        self.config.l1 = Some(l1);
        self
    }

    /// Logins that reach WeChat, per client address (IPv6 per /64) and
    /// minute, with a burst (default 60 a minute, burst 20). The address is
    /// [`ClientIp`] when present (see [`crate::ClientAddrLayer`]), else a
    /// `SocketAddr` request extension.
    ///
    /// ```
    /// # use std::num::NonZeroU32;
    /// # use weapp_session::{CodeExchanger, ExchangeError, Exchanged, MemoryStore, WxSessionLayer};
    /// # struct WeChat;
    /// # #[async_trait::async_trait]
    /// # impl CodeExchanger for WeChat {
    /// #     async fn code2session(&self, _: &str) -> Result<Exchanged, ExchangeError> { Err(ExchangeError::Timeout) }
    /// # }
    /// let per_minute = NonZeroU32::new(30).unwrap();
    /// let burst = NonZeroU32::new(10).unwrap();
    /// let layer = WxSessionLayer::builder(MemoryStore::new(100), WeChat)
    ///     .with_login_rate_limit(per_minute, burst)
    ///     .build();
    /// # let _ = layer;
    /// ```
    pub fn with_login_rate_limit(mut self, per_minute: NonZeroU32, burst: NonZeroU32) -> Self {
        self.config.login_rate_limit = Some(LoginRateLimit { per_minute, burst });
        self
    }

    /// No per-address login limit (for a service whose front already limits).
    ///
    /// ```
    /// # use weapp_session::{CodeExchanger, ExchangeError, Exchanged, MemoryStore, WxSessionLayer};
    /// # struct WeChat;
    /// # #[async_trait::async_trait]
    /// # impl CodeExchanger for WeChat {
    /// #     async fn code2session(&self, _: &str) -> Result<Exchanged, ExchangeError> { Err(ExchangeError::Timeout) }
    /// # }
    /// let layer = WxSessionLayer::builder(MemoryStore::new(100), WeChat)
    ///     .without_login_rate_limit()
    ///     .build();
    /// assert!(layer.engine().config().login_rate_limit().is_none());
    /// ```
    pub fn without_login_rate_limit(mut self) -> Self {
        self.config.login_rate_limit = None;
        self
    }

    /// The instance-wide budget of code exchanges that reach WeChat, per
    /// second with a burst (default 50/s, burst 100), so no number of client
    /// addresses can spend the app's WeChat quota.
    ///
    /// ```
    /// # use std::num::NonZeroU32;
    /// # use weapp_session::{CodeExchanger, ExchangeError, Exchanged, MemoryStore, WxSessionLayer};
    /// # struct WeChat;
    /// # #[async_trait::async_trait]
    /// # impl CodeExchanger for WeChat {
    /// #     async fn code2session(&self, _: &str) -> Result<Exchanged, ExchangeError> { Err(ExchangeError::Timeout) }
    /// # }
    /// let layer = WxSessionLayer::builder(MemoryStore::new(100), WeChat)
    ///     .with_exchange_budget(NonZeroU32::new(20).unwrap(), NonZeroU32::new(40).unwrap())
    ///     .build();
    /// # let _ = layer;
    /// ```
    pub fn with_exchange_budget(mut self, per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        self.config.exchange_budget = Some(ExchangeBudget { per_second, burst });
        self
    }

    /// No instance-wide exchange budget.
    ///
    /// ```
    /// # use weapp_session::{CodeExchanger, ExchangeError, Exchanged, MemoryStore, WxSessionLayer};
    /// # struct WeChat;
    /// # #[async_trait::async_trait]
    /// # impl CodeExchanger for WeChat {
    /// #     async fn code2session(&self, _: &str) -> Result<Exchanged, ExchangeError> { Err(ExchangeError::Timeout) }
    /// # }
    /// let layer = WxSessionLayer::builder(MemoryStore::new(100), WeChat)
    ///     .without_exchange_budget()
    ///     .build();
    /// assert!(layer.engine().config().exchange_budget().is_none());
    /// ```
    pub fn without_exchange_budget(mut self) -> Self {
        self.config.exchange_budget = None;
        self
    }

    /// Largest accepted token-login body, in bytes (default 16 KiB).
    ///
    /// ```
    /// # use weapp_session::{CodeExchanger, ExchangeError, Exchanged, MemoryStore, WxSessionLayer};
    /// # struct WeChat;
    /// # #[async_trait::async_trait]
    /// # impl CodeExchanger for WeChat {
    /// #     async fn code2session(&self, _: &str) -> Result<Exchanged, ExchangeError> { Err(ExchangeError::Timeout) }
    /// # }
    /// let layer = WxSessionLayer::builder(MemoryStore::new(100), WeChat)
    ///     .with_max_login_body(4096)
    ///     .build();
    /// assert_eq!(layer.engine().config().max_login_body(), 4096);
    /// ```
    pub fn with_max_login_body(mut self, bytes: usize) -> Self {
        self.config.max_login_body = bytes;
        self
    }

    /// Recognise the server's body-read deadline error (for example
    /// tower-http's `TimeoutError`), so a token-login body that arrives too
    /// slowly answers `408 ERR_REQUEST_TIMEOUT` instead of 400.
    /// `io::ErrorKind::TimedOut` is always recognised.
    ///
    /// ```
    /// # use weapp_session::{CodeExchanger, ExchangeError, Exchanged, MemoryStore, WxSessionLayer};
    /// # struct WeChat;
    /// # #[async_trait::async_trait]
    /// # impl CodeExchanger for WeChat {
    /// #     async fn code2session(&self, _: &str) -> Result<Exchanged, ExchangeError> { Err(ExchangeError::Timeout) }
    /// # }
    /// #[derive(Debug)]
    /// struct MyDeadline;
    /// impl std::fmt::Display for MyDeadline {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("deadline") }
    /// }
    /// impl std::error::Error for MyDeadline {}
    /// let layer = WxSessionLayer::builder(MemoryStore::new(100), WeChat)
    ///     .with_body_timeout_error(|e| e.is::<MyDeadline>())
    ///     .build();
    /// # let _ = layer;
    /// ```
    pub fn with_body_timeout_error(
        mut self,
        is_timeout: fn(&(dyn std::error::Error + 'static)) -> bool,
    ) -> Self {
        self.config.body_timeout_error = is_timeout;
        self
    }

    /// The layer. It owns the engine; clones share it. Wrap routes with it
    /// like any tower layer:
    ///
    /// ```
    /// use axum::{Router, routing::get};
    /// use weapp_session::{MemoryStore, WxSession, WxSessionLayer};
    /// # use weapp_session::{CodeExchanger, ExchangeError, Exchanged};
    /// # struct WeChat;
    /// # #[async_trait::async_trait]
    /// # impl CodeExchanger for WeChat {
    /// #     async fn code2session(&self, _: &str) -> Result<Exchanged, ExchangeError> { Err(ExchangeError::Timeout) }
    /// # }
    /// let layer = WxSessionLayer::builder(MemoryStore::new(100), WeChat).build();
    /// let app: Router = Router::new()
    ///     .route("/me", get(|user: WxSession| async move { user.openid().to_owned() }))
    ///     .layer(layer);
    /// # let _ = app;
    /// ```
    pub fn build(self) -> WxSessionLayer {
        WxSessionLayer {
            engine: Arc::new(SessionEngine::new(self.store, self.exchanger, self.config)),
        }
    }
}

impl<S> Layer<S> for WxSessionLayer {
    type Service = WxSessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WxSessionService { inner, engine: self.engine.clone() }
    }
}

/// The service [`WxSessionLayer`] produces.
#[derive(Clone, Debug)]
pub struct WxSessionService<S> {
    inner: S,
    engine: Arc<SessionEngine>,
}

/// The response body of [`WxSessionService`]: the inner service's, or the
/// layer's own error envelope.
pub type LayerBody<B> = Either<B, EnvelopeBody>;

/// The response future of [`WxSessionService`].
pub type ResponseFuture<B, E> = BoxFuture<'static, Result<http::Response<LayerBody<B>>, E>>;

/// The client address of a request: [`ClientIp`] when a front established
/// it, else a `SocketAddr` extension (what a bare hyper server inserts).
pub(crate) fn client_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    if let Some(ClientIp(ip)) = req.extensions().get::<ClientIp>() {
        return Some(*ip);
    }
    req.extensions().get::<SocketAddr>().map(SocketAddr::ip)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for WxSessionService<S>
where
    S: Service<Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
{
    type Response = http::Response<LayerBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The clone may not be ready; swap so the one we polled is the one we call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let engine = self.engine.clone();
        if engine.is_ignored(req.uri().path()) {
            return Box::pin(async move { Ok(inner.call(req).await?.map(Either::Left)) });
        }
        Box::pin(async move {
            let client = client_ip(&req);
            let session = match engine.authenticate(req.headers(), client).await {
                Ok(session) => session,
                Err(e) => return Ok(e.to_response().map(Either::Right)),
            };
            let tag = session.as_ref().map(|s| UserTag(s.clone()));
            req.extensions_mut().insert(LayerSeen);
            if let Some(session) = session {
                req.extensions_mut().insert(session);
            }
            let mut response = inner.call(req).await?.map(Either::Left);
            if let Some(tag) = tag {
                response.extensions_mut().insert(tag);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    //! The layer driven as a tower service, no network: a mock exchanger and
    //! the memory store.
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use axum::Router;
    use axum::routing::get;
    use tower::{ServiceBuilder, ServiceExt};

    use axum::body::Body;
    use axum::response::Response;
    use http::StatusCode;
    use http_body_util::BodyExt;

    use super::*;
    use crate::{CodeExchanger, ExchangeError, Exchanged, MemoryStore, WxSession};

    /// A session_key shaped like WeChat's (base64 of 16 bytes).
    const KEY: &str = "HyVFkGl5F5OQWJZZaNzBBg==";

    struct Mock {
        calls: AtomicUsize,
    }

    #[async_trait]
    impl CodeExchanger for Mock {
        async fn code2session(&self, code: &str) -> Result<Exchanged, ExchangeError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if code == "good" {
                Ok(Exchanged { openid: "o1".into(), session_key: KEY.into(), unionid: None })
            } else {
                Err(ExchangeError::WeChat { errcode: 40029, errmsg: "invalid code".into() })
            }
        }
    }

    fn sessions() -> (WxSessionLayer, Arc<Mock>) {
        let mock = Arc::new(Mock { calls: AtomicUsize::new(0) });
        let store = Arc::new(MemoryStore::new(100));
        (WxSessionLayerBuilder::from_arcs(store, mock.clone()).build(), mock)
    }

    async fn echo(req: Request<Body>) -> Result<Response, std::convert::Infallible> {
        let who = req.extensions().get::<WxSession>().map(|s| s.openid().to_owned());
        Ok(Response::new(Body::from(who.unwrap_or_else(|| "anonymous".into()))))
    }

    async fn text<B>(response: http::Response<B>) -> (StatusCode, String)
    where
        B: http_body::Body,
        B::Error: std::fmt::Debug,
    {
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn logs_in_and_hands_the_identity_to_the_inner_service() {
        let (sessions, mock) = sessions();
        let svc = ServiceBuilder::new().layer(sessions).service_fn(echo);
        let raw = "{\"nickName\":\"n\"}";
        let sig = {
            use sha1::Digest;
            hex::encode(sha1::Sha1::digest(format!("{raw}{KEY}").as_bytes()))
        };
        let req = Request::get("/x")
            .header("x-wx-code", "good")
            .header("x-wx-rawdata", "%7B%22nickName%22%3A%22n%22%7D")
            .header("x-wx-signature", sig)
            .body(Body::empty())
            .unwrap();
        let (status, body) = text(svc.clone().oneshot(req).await.unwrap()).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "o1"));
        let req = Request::get("/x").header("x-wx-code", "good").body(Body::empty()).unwrap();
        let (_, body) = text(svc.clone().oneshot(req).await.unwrap()).await;
        assert_eq!(body, "o1");
        assert_eq!(mock.calls.load(Ordering::SeqCst), 1);
        let req = Request::get("/x").body(Body::empty()).unwrap();
        let (status, body) = text(svc.oneshot(req).await.unwrap()).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "anonymous"));
    }

    #[tokio::test]
    async fn rejections_are_ok_responses_in_the_envelope() {
        let (sessions, mock) = sessions();
        let svc = ServiceBuilder::new().layer(sessions).service_fn(echo);
        let req = Request::get("/x").header("x-wx-code", "unknown").body(Body::empty()).unwrap();
        let (status, body) = text(svc.oneshot(req).await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["reason"], "ERR_SESSION_EXPIRED");
        assert_eq!(v[crate::ERROR_MAGIC], 1);
        assert_eq!(mock.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn extractor_without_the_layer_says_so() {
        let app: Router =
            Router::new().route("/me", get(|s: WxSession| async move { s.openid().to_owned() }));
        let response = app.oneshot(Request::get("/me").body(Body::empty()).unwrap()).await.unwrap();
        let (status, body) = text(response).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.contains("is WxSessionLayer enabled"), "{body}");
    }

    #[tokio::test]
    async fn require_login_guards_routes_and_ignored_paths_are_untouched() {
        let (sessions, _) = sessions();
        let app: Router = Router::new()
            .route("/private", get(|| async { "secret" }))
            .route_layer(axum::middleware::from_fn(crate::require_login))
            .route("/healthz", get(|| async { "ok" }))
            .layer(sessions);
        let r = app.clone().oneshot(Request::get("/private").body(Body::empty()).unwrap()).await;
        let (status, body) = text(r.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("ERR_NOT_LOGGED_IN"));
        let req = Request::get("/healthz").header("x-wx-code", "unknown").body(Body::empty());
        let (status, body) = text(app.oneshot(req.unwrap()).await.unwrap()).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }
}
