//! Inbound protection: header size, load shedding and a request timeout, answered in Cinder's
//! fault format. Nothing queues: past `server.max_in_flight` a request is shed at once.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::state::AppState;

pub async fn inbound(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let server = &state.config.server;
    if let Err(e) = super::path::check(request.uri().path()) {
        return e.into_response();
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes as u64 > server.max_header_bytes.as_u64() {
        return ApiError::HeadersTooLarge(format!(
            "Request headers are {header_bytes} bytes; server.max_header_bytes allows {}.",
            server.max_header_bytes.as_u64()
        ))
        .into_response();
    }
    let Ok(_slot) = state.in_flight.try_acquire() else {
        state.metrics.http.shed.inc();
        return ApiError::Busy("The proxy is at capacity; retry shortly.".into()).into_response();
    };
    match tokio::time::timeout(server.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(format!(
            "The request took longer than server.request_timeout ({:?}).",
            server.request_timeout
        ))
        .into_response(),
    }
}
