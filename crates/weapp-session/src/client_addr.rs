//! `ClientAddrLayer`: the client's address behind trusted proxies, for the
//! login rate limit (and anything else that keys on the client).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Request};
use tower_layer::Layer;
use tower_service::Service;

use super::layer::ClientIp;

/// Where a request's socket peer is found in its extensions.
pub type PeerFn = fn(&http::Extensions) -> Option<SocketAddr>;

/// Tower layer that puts the client's address into the request extensions as
/// [`ClientIp`], which [`crate::WxSessionLayer`] rate-limits logins by.
///
/// The address is the socket peer, or, only when the peer is a trusted proxy
/// (nginx in front), the right-most `X-Forwarded-For` hop that is not itself a
/// trusted proxy: hops further left are whatever the client wrote. Addresses
/// are canonicalised, so an IPv4 peer seen on a dual-stack listener as
/// `::ffff:127.0.0.1` matches a trusted `127.0.0.1` and shares its bucket.
///
/// The peer is read with `peer` (default: a `SocketAddr` extension, which a
/// bare hyper server inserts itself). With axum's
/// `into_make_service_with_connect_info::<SocketAddr>()`:
///
/// ```
/// use std::net::SocketAddr;
/// use axum::extract::ConnectInfo;
/// use weapp_session::ClientAddrLayer;
///
/// let nginx = "127.0.0.1".parse().unwrap();
/// let layer = ClientAddrLayer::new([nginx])
///     .with_peer(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0));
/// # let _ = layer;
/// ```
///
/// Put it outside (after, in `Router::layer` order) the session layer.
#[derive(Clone, Debug)]
pub struct ClientAddrLayer {
    trusted: Arc<[IpAddr]>,
    peer: PeerFn,
}

impl ClientAddrLayer {
    /// Believe `X-Forwarded-For` only from these proxies (none: never).
    ///
    /// ```
    /// let layer = weapp_session::ClientAddrLayer::new([]);
    /// # let _ = layer;
    /// ```
    pub fn new(trusted_proxies: impl IntoIterator<Item = IpAddr>) -> Self {
        let trusted = trusted_proxies.into_iter().map(|ip| ip.to_canonical()).collect();
        Self { trusted, peer: |ext| ext.get::<SocketAddr>().copied() }
    }

    /// Read the socket peer with `peer` instead of a `SocketAddr` extension.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// let layer = weapp_session::ClientAddrLayer::new([])
    ///     .with_peer(|ext| ext.get::<SocketAddr>().copied());
    /// # let _ = layer;
    /// ```
    pub fn with_peer(mut self, peer: PeerFn) -> Self {
        self.peer = peer;
        self
    }
}

impl<S> Layer<S> for ClientAddrLayer {
    type Service = ClientAddr<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientAddr { inner, trusted: self.trusted.clone(), peer: self.peer }
    }
}

/// The service [`ClientAddrLayer`] produces.
#[derive(Clone, Debug)]
pub struct ClientAddr<S> {
    inner: S,
    trusted: Arc<[IpAddr]>,
    peer: PeerFn,
}

impl<S, B> Service<Request<B>> for ClientAddr<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let peer = (self.peer)(req.extensions()).map(|a| a.ip());
        if let Some(ip) = client_ip(peer, req.headers(), &self.trusted) {
            req.extensions_mut().insert(ClientIp(ip));
        }
        self.inner.call(req)
    }
}

/// The client's address: the socket peer, or, only when the peer is a
/// trusted proxy, the right-most `X-Forwarded-For` entry that is not itself
/// a trusted proxy. Canonicalised (IPv4-mapped IPv6 becomes IPv4).
///
/// ```
/// # use std::net::IpAddr;
/// let nginx: IpAddr = "127.0.0.1".parse().unwrap();
/// let mut headers = http::HeaderMap::new();
/// headers.insert("x-forwarded-for", "198.51.100.1, 203.0.113.7".parse().unwrap());
/// let client = weapp_session::client_ip(Some(nginx), &headers, &[nginx]);
/// assert_eq!(client, Some("203.0.113.7".parse().unwrap()));
/// ```
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpAddr]) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|t| t.to_canonical() == ip);
    let peer = peer?.to_canonical();
    if !is_trusted(peer) {
        return Some(peer);
    }
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else { return Some(client) };
        for hop in text.rsplit(',') {
            match hop.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
                Ok(ip) if is_trusted(ip) => client = ip,
                Ok(ip) => return Some(ip),
                Err(_) => return Some(client),
            }
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let nginx: IpAddr = "127.0.0.1".parse().unwrap();
        let trusted = [nginx];
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let spoofed = xff("198.51.100.1, 203.0.113.7");
        // From nginx: the right-most untrusted hop is the client.
        assert_eq!(client_ip(Some(nginx), &spoofed, &trusted), Some(client));
        // From anyone else: the header is ignored.
        let other: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(client_ip(Some(other), &spoofed, &trusted), Some(other));
        // Trusted peer without the header, or with garbage: the peer.
        assert_eq!(client_ip(Some(nginx), &HeaderMap::new(), &trusted), Some(nginx));
        assert_eq!(client_ip(Some(nginx), &xff("nonsense"), &trusted), Some(nginx));
        // Chains of trusted proxies are skipped.
        assert_eq!(client_ip(Some(nginx), &xff("203.0.113.7, 127.0.0.1"), &trusted), Some(client));
    }

    #[test]
    fn ipv4_mapped_addresses_are_canonicalised() {
        let nginx: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        // nginx seen through a dual-stack listener is still the trusted proxy.
        assert_eq!(client_ip(Some(mapped), &xff("203.0.113.7"), &[nginx]), Some(client));
        // A mapped trusted entry matches a plain IPv4 peer too.
        assert_eq!(client_ip(Some(nginx), &xff("203.0.113.7"), &[mapped]), Some(client));
        // Mapped hops and untrusted mapped peers come out as IPv4: one bucket.
        assert_eq!(client_ip(Some(nginx), &xff("::ffff:203.0.113.7"), &[nginx]), Some(client));
        let other: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        assert_eq!(
            client_ip(Some(other), &xff("203.0.113.7"), &[nginx]),
            Some(other.to_canonical())
        );
        // Real IPv6 addresses are left alone.
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(client_ip(Some(v6), &HeaderMap::new(), &[nginx]), Some(v6));
    }

    #[tokio::test]
    async fn the_layer_sets_client_ip_from_the_peer_and_trusted_hops() {
        use tower::{ServiceBuilder, ServiceExt};
        let nginx: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let svc = ServiceBuilder::new().layer(ClientAddrLayer::new([nginx.ip()])).service_fn(
            |req: Request<()>| async move {
                Ok::<_, std::convert::Infallible>(req.extensions().get::<ClientIp>().copied())
            },
        );
        let mut req = Request::new(());
        req.extensions_mut().insert(nginx);
        req.headers_mut().insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
        let got = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(got, Some(ClientIp("203.0.113.7".parse().unwrap())));
        // No peer known: no address, whatever the header says.
        let mut req = Request::new(());
        req.headers_mut().insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
        assert_eq!(svc.oneshot(req).await.unwrap(), None);
    }
}
