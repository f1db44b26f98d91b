//! The cold-start floor: a warp server on tokio that answers `POST /<name>` with a fixed JSON body, bound the way
//! the handler binds (127.0.0.1, `FUNCTIONS_CUSTOMHANDLER_PORT`). Nothing else: no configuration, no clients, no
//! tracing.

use warp::Filter;

#[tokio::main]
async fn main() {
    let port: u16 = std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    eprintln!("listening on {}", listener.local_addr().expect("local address"));
    let route =
        warp::post().and(warp::path::param::<String>()).and(warp::body::bytes()).map(|_: String, _: bytes::Bytes| {
            warp::reply::json(&serde_json::json!({"Outputs": {}, "Logs": [], "ReturnValue": null}))
        });
    warp::serve(route).incoming(listener).run().await;
}
