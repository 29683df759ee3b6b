//! The tower layer in front of every service: authenticate (bearer token, or the TLS
//! client certificate of the connection), check the method's permission, hand the
//! [`Principal`] to the service in the request's extensions.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::{Authenticator, is_public, method_permission};

/// Authenticates every call except health and reflection (see the module docs); with no
/// authenticator, lets every call through.
#[derive(Debug, Clone, Default)]
pub struct AuthLayer {
    auth: Option<Arc<Authenticator>>,
}

impl AuthLayer {
    /// A layer checking calls with `auth` (`None`: no checks).
    pub fn new(auth: Option<Arc<Authenticator>>) -> Self {
        Self { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the routes.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Option<Arc<Authenticator>>,
}

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for AuthService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let Some(auth) = self.auth.clone() else {
            return Box::pin(self.inner.call(request));
        };
        if is_public(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        // The ready service handles this call; a clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // The client certificate of a mutual TLS connection, if one was presented.
        let peer = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs);
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            let principal = match auth
                .authenticate_peer(request.headers(), peer.as_deref().map(Vec::as_slice))
                .await
            {
                Ok(principal) => principal,
                Err(status) => return Ok(status.into_http()),
            };
            let Some(permission) = method_permission(&path) else {
                return Ok(Status::permission_denied(format!(
                    "no access policy covers {path}; it is refused to everyone"
                ))
                .into_http());
            };
            if let Err(status) = principal.require(permission) {
                tracing::info!(actor = %principal.actor, path, permission = permission.as_str(), "permission denied");
                return Ok(status.into_http());
            }
            request.extensions_mut().insert(principal);
            inner.call(request).await
        })
    }
}
