//! The HTTP/1.1 server under the router: accepts connections, serves each with hyper (upgrades
//! included, for WebSockets) and a deadline on reading every request's head, and shuts down
//! gracefully, over TLS when the node serves its certificate itself ([`crate::tls`]).
//! `axum::serve` has no such deadline: a client trickling a request head byte by
//! byte (or sending nothing) would hold its connection forever.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How long accepting pauses after an error (out of file descriptors, usually).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until `stop` resolves, then stops accepting, lets every open
/// connection finish its request (idle ones close at once, upgraded ones are not waited for:
/// their tasks end on their own), and returns. Requests carry `ConnectInfo<SocketAddr>`. With
/// `tls`, each connection first completes a TLS handshake within `header_read_timeout`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    tls: Option<TlsAcceptor>,
    stop: impl Future<Output = ()>,
) {
    // Every connection task holds a receiver; `closed()` on the sender waits for them all.
    let (stopping, stop_rx) = watch::channel(false);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Signals are small frames that must leave at once: no Nagle delay.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let app = app.clone();
        let service = tower::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(Body::new)).await;
                Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
            }
        });
        let stop_rx = stop_rx.clone();
        match &tls {
            None => {
                tokio::spawn(connection(stream, service, header_read_timeout, stop_rx));
            }
            Some(acceptor) => {
                let handshake = acceptor.accept(stream);
                tokio::spawn(async move {
                    match tokio::time::timeout(header_read_timeout, handshake).await {
                        Ok(Ok(stream)) => {
                            connection(stream, service, header_read_timeout, stop_rx).await;
                        }
                        Ok(Err(e)) => {
                            metrics::counter!(crate::metrics::TLS_HANDSHAKE_ERRORS).increment(1);
                            tracing::debug!(error = %e, %peer, "TLS handshake failed");
                        }
                        Err(_) => {
                            metrics::counter!(crate::metrics::TLS_HANDSHAKE_ERRORS).increment(1);
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = stopping.send(true);
    drop(stop_rx);
    stopping.closed().await;
}

/// Serves one connection with hyper until it ends, or until the server stops: then it finishes
/// the request in progress and closes.
async fn connection<S>(
    io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    service: S,
    header_read_timeout: Duration,
    mut stop_rx: watch::Receiver<bool>,
) where
    S: tower::Service<hyper::Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let served = http
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(served);
    tokio::select! {
        served = served.as_mut() => {
            if let Err(e) = served {
                tracing::trace!(error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stop_rx.wait_for(|stopping| *stopping) => {}
    }
    served.as_mut().graceful_shutdown();
    let _ = served.await;
}
