//! The network front: one gateway port and one admin port.
//!
//! The gateway sniffs the first byte of each connection: `0x16` (a TLS handshake) is served
//! directly, with the certificate picked by SNI; anything else is plain HTTP where only
//! `CONNECT` is allowed. A `CONNECT` to a host local-azure serves is answered `200` and the
//! tunnel is terminated with a leaf certificate for that host, so clients using
//! `HTTPS_PROXY` reach local-azure under the real Azure names. Other hosts are refused (`403`).
//! Decrypted requests are routed by `Host` into ARM, Key Vault and Service Bus.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::App;
use crate::ca::{self, is_served_host};
use crate::http::{Outcome, Req, Resp};
use crate::{admin, arm, faults, keyvault};

const MAX_BODY: usize = 8 * 1024 * 1024;

/// Returned from a hyper service to close the connection without an answer.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by fault injection")]
struct DropConnection;

fn to_hyper(resp: Resp) -> Response<Full<Bytes>> {
    let mut out = Response::new(Full::new(resp.body));
    *out.status_mut() = resp.status;
    *out.headers_mut() = resp.headers;
    out
}

async fn buffer(req: Request<Incoming>, host: &str) -> Result<Req, Resp> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Err(Resp::text(StatusCode::PAYLOAD_TOO_LARGE, format!("request body could not be read: {e}")));
        }
    };
    let pq = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    Ok(Req::new(parts.method, host, &pq, parts.headers, body))
}

/// Which service a host belongs to.
fn service_of(host: &str) -> Option<&'static str> {
    if host == "management.azure.com" {
        Some("arm")
    } else if keyvault::vault_name_of_host(host).is_some() {
        Some("keyvault")
    } else if host.ends_with(".servicebus.windows.net") {
        Some("servicebus")
    } else if crate::tables::is_table_host(host) {
        Some("tables")
    } else {
        None
    }
}

fn operation_of(service: &str, req: &Req) -> String {
    match service {
        "arm" => arm::operation_name(req),
        "keyvault" => keyvault::operation_name(req),
        "identity" => "token".into(),
        "servicebus" => crate::servicebus::rest::operation_name(req),
        "tables" => crate::tables::operation_name(req),
        _ => format!("{} {}", req.method, req.path()),
    }
}

/// Applies faults, then runs the (synchronous, store-bound) handler off the async workers.
async fn run_service(
    app: Arc<App>,
    service: &'static str,
    req: Req,
    handler: fn(&App, &Req) -> Resp,
) -> Result<Resp, DropConnection> {
    let headers = match apply_faults(&app, service, &req).await? {
        Applied::Answer(resp) => return Ok(resp),
        Applied::Continue(headers) => headers,
    };
    let resp = tokio::task::spawn_blocking(move || handler(&app, &req)).await;
    let mut resp = resp.unwrap_or_else(|e| {
        tracing::error!(error = %e, service, "handler panicked");
        Resp::text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    });
    for (name, value) in headers {
        resp = resp.with_header(name, value);
    }
    Ok(resp)
}

/// What the fault rules decided for a request.
enum Applied {
    /// A fault answers instead of the service.
    Answer(Resp),
    /// The service answers, with these headers added (a rate limit's remaining count).
    Continue(Vec<(&'static str, String)>),
}

/// The faults that fire for this request: latency is slept here; a terminal fault is the answer. Matching and
/// counting happen in memory; only counted rules that fired are stored, before the request goes on.
async fn apply_faults(app: &Arc<App>, service: &'static str, req: &Req) -> Result<Applied, DropConnection> {
    let operation = operation_of(service, req);
    let firing = app.faults.fire(service, &operation, req);
    if !firing.to_persist.is_empty() {
        let app = app.clone();
        let fired = firing.to_persist;
        match tokio::task::spawn_blocking(move || faults::Faults::persist(&app.store, &fired)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "storing fault counts"),
            Err(e) => tracing::error!(error = %e, "fault task"),
        }
    }
    if !firing.latency.is_zero() {
        tokio::time::sleep(firing.latency).await;
    }
    if let Some(terminal) = firing.terminal {
        return match faults::outcome(service, &terminal) {
            Outcome::Drop => Err(DropConnection),
            Outcome::Respond(mut r) => {
                for (name, value) in firing.headers {
                    r = r.with_header(name, value);
                }
                Ok(Applied::Answer(r))
            }
        };
    }
    Ok(Applied::Continue(firing.headers))
}

fn keyvault_handler(app: &App, req: &Req) -> Resp {
    match keyvault::vault_name_of_host(&req.host) {
        Some(name) => keyvault::handle(app, name, req),
        None => Resp::text(StatusCode::NOT_FOUND, "not a vault host"),
    }
}

/// Serves one decrypted HTTPS request; `default_host` is the SNI or CONNECT target.
async fn serve_https(
    app: Arc<App>,
    req: Request<Incoming>,
    default_host: Arc<str>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().host().map(str::to_string))
        .unwrap_or_else(|| default_host.to_string());
    let req = match buffer(req, &host).await {
        Ok(r) => r,
        Err(resp) => return Ok(to_hyper(resp)),
    };
    let resp = match service_of(&req.host) {
        Some("arm") => {
            let mutating = !matches!(req.method, Method::GET | Method::HEAD);
            let resp = run_service(app.clone(), "arm", req, arm::handle).await?;
            if mutating {
                // The activity log grew: let Event Grid publish.
                app.eventgrid.wake();
            }
            resp
        }
        Some("keyvault") => run_service(app, "keyvault", req, keyvault_handler).await?,
        Some("tables") => run_service(app, "tables", req, crate::tables::handle).await?,
        Some(_) => match apply_faults(&app, "servicebus", &req).await? {
            Applied::Answer(resp) => resp,
            Applied::Continue(_) => crate::servicebus::rest::handle(app, req).await,
        },
        None => Resp::text(StatusCode::MISDIRECTED_REQUEST, format!("local-azure does not serve host '{}'", req.host)),
    };
    Ok(to_hyper(resp))
}

/// Terminates TLS on `io` and serves HTTP/1.1 over it.
async fn serve_tls<IO>(app: Arc<App>, io: IO, fallback_host: String)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = match ca::server_config(&app.ca, &fallback_host) {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, "TLS configuration");
            return;
        }
    };
    let tls = match TlsAcceptor::from(Arc::new(config)).accept(io).await {
        Ok(t) => t,
        Err(error) => {
            tracing::debug!(%error, host = %fallback_host, "TLS handshake failed");
            return;
        }
    };
    let sni: Arc<str> = tls.get_ref().1.server_name().map(str::to_string).unwrap_or(fallback_host).into();
    let svc = service_fn(move |req| serve_https(app.clone(), req, sni.clone()));
    if let Err(error) = http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await {
        tracing::debug!(%error, "HTTPS connection ended");
    }
}

/// `CONNECT host:443` on the plain side of the gateway.
async fn serve_proxy(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::CONNECT {
        return Ok(to_hyper(Resp::text(
            StatusCode::BAD_REQUEST,
            "local-azure gateway: plain HTTP here only accepts CONNECT (use it as HTTPS_PROXY); the admin API is on the admin port\n",
        )));
    }
    let Some(authority) = req.uri().authority().cloned() else {
        return Ok(to_hyper(Resp::text(StatusCode::BAD_REQUEST, "CONNECT needs host:port\n")));
    };
    let host = authority.host().to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(443);
    if !is_served_host(&host) || host == "localhost" || host == "127.0.0.1" || port != 443 {
        tracing::warn!(host, port, "CONNECT refused");
        return Ok(to_hyper(Resp::text(
            StatusCode::FORBIDDEN,
            format!(
                "local-azure refuses to tunnel to {host}:{port}: it only serves management.azure.com, *.vault.azure.net, *.servicebus.windows.net and *.table.core.windows.net on port 443 (no internet here). Set NO_PROXY for local addresses.\n"
            ),
        )));
    }
    let resolved = {
        let app = app.clone();
        let host = host.clone();
        tokio::task::spawn_blocking(move || resolves(&app, &host)).await.unwrap_or(Err("local-azure failed to look"))
    };
    if let Err(missing) = resolved {
        return Ok(to_hyper(Resp::text(
            StatusCode::BAD_GATEWAY,
            format!("local-azure: {host} does not resolve ({missing})\n"),
        )));
    }
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => serve_tls(app, TokioIo::new(upgraded), host).await,
            Err(error) => tracing::debug!(%error, "CONNECT upgrade failed"),
        }
    });
    Ok(Response::new(Full::new(Bytes::new())))
}

/// Whether `host` has a DNS name in Azure: a vault that doesn't exist or is soft-deleted has none, nor has a Service
/// Bus namespace or a storage account that doesn't exist. A client sees the `502` as a connection error, like a DNS
/// failure. `Err` names what is missing.
fn resolves(app: &App, host: &str) -> Result<(), &'static str> {
    if let Some(vault) = keyvault::vault_name_of_host(host) {
        let live = crate::arm::vaults::by_name(app, vault).ok().flatten().is_some_and(|v| v.deleted.is_none());
        return if live { Ok(()) } else { Err("no such vault, or it is soft-deleted") };
    }
    if let Some(namespace) = host.strip_suffix(".servicebus.windows.net") {
        let exists = crate::servicebus::broker::namespace(&app.store, namespace).ok().flatten().is_some();
        return if exists { Ok(()) } else { Err("no such Service Bus namespace") };
    }
    if crate::tables::is_table_host(host) && crate::tables::account_of_host(&app.store, host).is_none() {
        return Err("no such storage account");
    }
    Ok(())
}

async fn serve_gateway_connection(app: Arc<App>, stream: TcpStream) {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(0) | Err(_) => return,
        Ok(_) => {}
    }
    if first[0] == 0x16 {
        serve_tls(app, stream, "localhost".into()).await;
    } else {
        let svc = service_fn(move |req| serve_proxy(app.clone(), req));
        if let Err(error) = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).with_upgrades().await {
            tracing::debug!(%error, "proxy connection ended");
        }
    }
}

async fn serve_admin_request(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, DropConnection> {
    let req = match buffer(req, "localhost").await {
        Ok(r) => r,
        Err(resp) => return Ok(to_hyper(resp)),
    };
    let is_identity = req.segments.first().is_some_and(|s| s.eq_ignore_ascii_case("msi"));
    let creates_event_subscription = req.method == Method::POST
        && req.segments.iter().map(String::as_str).eq(["admin", "eventgrid", "subscriptions"]);
    let resp = if creates_event_subscription {
        crate::eventgrid::create(app, req).await
    } else if is_identity {
        run_service(app, "identity", req, admin::handle).await?
    } else {
        let app = app.clone();
        tokio::task::spawn_blocking(move || admin::handle(&app, &req))
            .await
            .unwrap_or_else(|_| Resp::text(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
    };
    Ok(to_hyper(resp))
}

/// Accepts connections until `shutdown` turns true.
pub async fn serve(app: Arc<App>, listener: TcpListener, admin: bool, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                continue;
            }
        };
        let app = app.clone();
        if admin {
            // The admin API and identity endpoint are for this machine only.
            if !peer.ip().is_loopback() {
                continue;
            }
            tokio::spawn(
                async move {
                    let svc = service_fn(move |req| serve_admin_request(app.clone(), req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                }
                .instrument(tracing::debug_span!("admin", %peer)),
            );
        } else {
            tokio::spawn(serve_gateway_connection(app, stream).instrument(tracing::debug_span!("gateway", %peer)));
        }
    }
}
