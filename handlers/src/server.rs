//! The HTTP server the Functions host talks to: one `POST /<FunctionName>` route per entry of the function table.
//!
//! The real Functions host sends every invocation body **chunked**, with no `Content-Length`: it posts an
//! `ObjectContent` (azure-functions-host `src/WebJobs.Script/Workers/MessageExtensions/
//! HttpScriptInvocationContextExtensions.cs`), whose length .NET cannot know in advance. Core Tools buffers the body
//! and sends a `Content-Length`. Both are read here, and the size limit is enforced on the streamed bytes.
//!
//! Whatever arrives, the process keeps serving: a malformed envelope is a `400` naming the field, an unknown
//! function a `404`, an oversized body a `413` (refused as soon as the limit is passed, without reading the rest), a handler error its own non-2xx status with the error in `Logs`, and
//! a panic inside a handler a `500` for that invocation only (handlers run on their own task, so a panic unwinds
//! that task and nothing else).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::Instrument;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::deps::Deps;
use crate::error::FunctionError;
use crate::functions::{self, FunctionDef, Invocation};
use crate::protocol::{FailedInvocation, INVOCATION_ID_HEADER, InvocationRequest};

/// The largest invocation body accepted. Service Bus messages are at most 256 KiB (Standard tier) and Event Grid
/// delivers at most 1 MiB per batch; 4 MiB leaves room for the host's envelope and double encoding, while a
/// runaway body is refused before it is buffered.
pub const MAX_INVOCATION_BYTES: u64 = 4 * 1024 * 1024;

/// Serves the function table on `listener` until `shutdown` completes; in-flight invocations finish first.
pub async fn run(listener: TcpListener, deps: Arc<Deps>, shutdown: impl Future<Output = ()> + Send + 'static) {
    warp::serve(routes(functions::FUNCTIONS, deps)).incoming(listener).graceful(shutdown).run().await;
}

/// Completes on Ctrl-C or SIGTERM (what the Functions host sends when it recycles a worker). The handlers are
/// registered when this is called, not when the future is first polled, so a signal that arrives right after the
/// "listening" line is not lost: call it before announcing readiness.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (mut terminate, mut interrupt) = {
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok())
    };
    async move {
        #[cfg(unix)]
        {
            let term = async {
                match terminate.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let int = async {
                match interrupt.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = term => tracing::info!("SIGTERM received, shutting down"),
                _ = int => tracing::info!("Ctrl-C received, shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received, shutting down");
        }
    }
}

/// The server's routes over a function table: `functions::FUNCTIONS` in production; tests pass tables of their own
/// (a function that panics, say) to prove what the server does around a handler.
pub fn routes(
    table: &'static [FunctionDef],
    deps: Arc<Deps>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    warp::post()
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::header::optional::<String>(INVOCATION_ID_HEADER))
        .and(limited_body(MAX_INVOCATION_BYTES))
        .and(warp::any().map(move || (table, deps.clone())))
        .then(invoke)
        .recover(move |rejection| rejection_for(table, rejection))
        .unify()
}

/// The request body, chunked or length-delimited, up to `limit` bytes. A declared `Content-Length` over the limit
/// is refused before anything is read; a chunked body is refused as soon as its running total passes the limit.
fn limited_body(limit: u64) -> impl Filter<Extract = (Bytes,), Error = warp::Rejection> + Copy {
    warp::header::optional::<u64>("content-length").and(warp::body::stream()).and_then(
        move |declared: Option<u64>, stream| async move {
            if declared.is_some_and(|length| length > limit) {
                return Err(warp::reject::custom(BodyRefused::TooLarge));
            }
            read_limited(stream, limit).await.map_err(warp::reject::custom)
        },
    )
}

#[derive(Debug)]
enum BodyRefused {
    TooLarge,
    Unreadable(String),
}

impl warp::reject::Reject for BodyRefused {}

async fn read_limited<S, B>(stream: S, limit: u64) -> Result<Bytes, BodyRefused>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut stream = std::pin::pin!(stream);
    let mut body = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|err| BodyRefused::Unreadable(err.to_string()))?;
        if body.len() as u64 + chunk.remaining() as u64 > limit {
            return Err(BodyRefused::TooLarge);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            body.extend_from_slice(part);
            let read = part.len();
            chunk.advance(read);
        }
    }
    Ok(body.freeze())
}

async fn invoke(
    function: String,
    invocation_id: Option<String>,
    body: Bytes,
    (table, deps): (&'static [FunctionDef], Arc<Deps>),
) -> Response {
    let Some(def) = table.iter().find(|f| f.name == function) else {
        tracing::warn!(function = %function, "invocation refused: no such function");
        return error_reply(
            StatusCode::NOT_FOUND,
            "FunctionNotFound",
            format!("no function named `{function}`; known functions: {}", known_functions(table)),
        );
    };
    let invocation_id = invocation_id.unwrap_or_default();
    // An HTTP function records its authenticated caller on this span, so "invocation done" names who asked.
    let span = tracing::info_span!(
        "invocation",
        function = def.name,
        invocation_id = %invocation_id,
        caller_id = tracing::field::Empty,
        caller_name = tracing::field::Empty
    );
    async move {
        let started = Instant::now();
        let reply = match parse_envelope(&body) {
            Ok(request) => {
                let invocation = Invocation { function: def.name, invocation_id, request };
                let task = tokio::spawn((def.handler)(invocation, deps).in_current_span());
                match task.await {
                    Ok(Ok(response)) => json_reply(StatusCode::OK, &response),
                    Ok(Err(err)) => failed(&err),
                    Err(join) if join.is_panic() => {
                        failed(&FunctionError::Internal("the handler panicked; the process log has the details".into()))
                    }
                    Err(_) => failed(&FunctionError::Internal("the handler was cancelled".into())),
                }
            }
            Err(err) => failed(&err),
        };
        tracing::info!(
            status = reply.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "invocation done"
        );
        reply
    }
    .instrument(span)
    .await
}

/// Reads the host's POST body. Public for the `envelope` fuzz target, which must drive this very function.
pub fn parse_envelope(body: &[u8]) -> Result<InvocationRequest, FunctionError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let request = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        // A syntax error has no meaningful field path (serde reports the half-read one); name the body itself.
        let path = err.path().to_string();
        let unparseable =
            matches!(err.inner().classify(), serde_json::error::Category::Syntax | serde_json::error::Category::Eof);
        let field = if unparseable || path.is_empty() || path == "." { "body".to_string() } else { path };
        FunctionError::invalid(
            field,
            format!("not a custom-handler invocation ({{\"Data\", \"Metadata\"}}): {}", err.inner()),
        )
    })?;
    // Bytes after the document (two bodies run together, trailing garbage) are no invocation; the envelope fuzz
    // target found them accepted.
    de.end().map_err(|err| FunctionError::invalid("body", format!("not one JSON document: {err}")))?;
    Ok(request)
}

/// A failed invocation: the reason goes to stderr as well as into `Logs`, because the host writes `Logs` only for
/// a 2xx answer (see [`rejection_for`]).
fn failed(err: &FunctionError) -> Response {
    if err.status() >= 500 && err.retryable() {
        tracing::error!(code = err.code(), "invocation failed: {err}");
    } else {
        tracing::warn!(code = err.code(), "invocation failed: {err}");
    }
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_reply(status, &FailedInvocation::from(err))
}

fn error_reply(status: StatusCode, code: &str, message: String) -> Response {
    json_reply(status, &serde_json::json!({"error": {"code": code, "message": message}}))
}

fn json_reply(status: StatusCode, body: &impl Serialize) -> Response {
    let mut response = warp::reply::json(body).into_response();
    *response.status_mut() = status;
    response
}

fn known_functions(table: &[FunctionDef]) -> String {
    table.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
}

/// Turns warp's rejections (no route, wrong method, body too large, …) into JSON errors like every other answer.
async fn rejection_for(table: &'static [FunctionDef], rejection: warp::Rejection) -> Result<Response, Infallible> {
    use warp::reject::{MethodNotAllowed, UnsupportedMediaType};
    let (status, code, message) = if let Some(BodyRefused::TooLarge) = rejection.find::<BodyRefused>() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("the invocation body exceeds {MAX_INVOCATION_BYTES} bytes"),
        )
    } else if let Some(BodyRefused::Unreadable(reason)) = rejection.find::<BodyRefused>() {
        (StatusCode::BAD_REQUEST, "BodyUnreadable", format!("the invocation body could not be read: {reason}"))
    } else if rejection.find::<MethodNotAllowed>().is_some() {
        (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "invoke functions with POST /<FunctionName>".to_string())
    } else if rejection.find::<UnsupportedMediaType>().is_some() {
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", "send application/json".to_string())
    } else if rejection.is_not_found() {
        (StatusCode::NOT_FOUND, "FunctionNotFound", format!("invoke one of: {}", known_functions(table)))
    } else {
        (StatusCode::BAD_REQUEST, "BadRequest", format!("{rejection:?}"))
    };
    // The host keeps `Logs` only for 2xx answers (azure-functions-host `DefaultHttpWorkerService.cs`,
    // `ProcessDefaultInvocationRequest`: `EnsureSuccessStatusCode` comes before the logs are read), so every
    // refusal's reason also goes to stderr, which the host collects.
    tracing::warn!(status = status.as_u16(), code, "invocation refused: {message}");
    Ok(error_reply(status, code, message))
}

use warp::Reply as _;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::azure::fake::{FakeAzure, settings};
    use crate::functions::{HandlerFuture, Trigger};

    fn panics(_: Invocation, _: Arc<Deps>) -> HandlerFuture {
        Box::pin(async { panic!("a handler bug") })
    }

    fn answers(_: Invocation, _: Arc<Deps>) -> HandlerFuture {
        Box::pin(async { Ok(crate::protocol::InvocationResponse::default().with_log("fine")) })
    }

    static TABLE: &[FunctionDef] = &[
        FunctionDef { name: "Panics", trigger: Trigger::EventGrid, handler: panics },
        FunctionDef { name: "Answers", trigger: Trigger::EventGrid, handler: answers },
    ];

    async fn post(function: &str) -> (u16, Value) {
        let routes = routes(TABLE, Arc::new(FakeAzure::new().deps(settings())));
        let response = warp::test::request()
            .method("POST")
            .path(&format!("/{function}"))
            .json(&json!({"Data": {}}))
            .reply(&routes)
            .await;
        (response.status().as_u16(), serde_json::from_slice(response.body()).unwrap())
    }

    #[tokio::test]
    async fn a_handler_panic_fails_that_invocation_only() {
        for _ in 0..3 {
            let (status, body) = post("Panics").await;
            assert_eq!(status, 500, "{body}");
            assert_eq!(body["error"]["code"], "InternalError");
            assert_eq!(body["error"]["retryable"], true);
        }
        let (status, body) = post("Answers").await;
        assert_eq!((status, body["Logs"][0].as_str()), (200, Some("fine")));
    }

    #[tokio::test]
    async fn an_unknown_function_names_the_tables_functions() {
        let (status, body) = post("Nope").await;
        assert_eq!(status, 404);
        assert!(body["error"]["message"].as_str().unwrap().contains("Panics, Answers"), "{body}");
    }
}
