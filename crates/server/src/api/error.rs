//! The one error type of the API: a status, a stable `code` and a message
//! safe to show the client. Internal context is logged, not sent.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cc_core::CoreError;
use cc_wire::api::ApiErrorBody;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ApiErrorBody {
            code: self.code.to_owned(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Invalid { code, message } => {
                Self::new(StatusCode::BAD_REQUEST, code, message)
            }
            CoreError::Forbidden { code, message } => {
                Self::new(StatusCode::FORBIDDEN, code, message)
            }
            CoreError::NotFound(id) => Self::new(
                StatusCode::NOT_FOUND,
                "session_not_found",
                format!("session {id} not found"),
            ),
            CoreError::Missing { code, message } => Self::new(StatusCode::NOT_FOUND, code, message),
            CoreError::Conflict { code, message } => Self::new(StatusCode::CONFLICT, code, message),
            CoreError::Unavailable(message) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            // The session changed replicas while the request was served:
            // retrying reaches its new owner.
            CoreError::Fenced(message) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "session_moved", message)
            }
            CoreError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; the server log has the details",
                )
            }
        }
    }
}

/// A store failure as the API answers it (through [`CoreError`]'s
/// classification: not found, conflict, unavailable, internal).
impl From<cc_core::StoreError> for ApiError {
    fn from(e: cc_core::StoreError) -> Self {
        CoreError::from(e).into()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                // serde's message names the field ("missing field `repoUrl`").
                format!("invalid request body: {}", inner_message(&e.body_text())),
            ),
            JsonRejection::JsonSyntaxError(e) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!(
                    "request body is not valid JSON: {}",
                    inner_message(&e.body_text())
                ),
            ),
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the request body as JSON with `Content-Type: application/json`",
            ),
            JsonRejection::BytesRejection(_) => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is too large or could not be read",
            ),
            other => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                other.body_text(),
            ),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("invalid query string: {}", inner_message(&r.body_text())),
        )
    }
}

/// axum prefixes serde's message with its own ("Failed to deserialize the
/// JSON body into the target type: "); keep serde's part.
fn inner_message(text: &str) -> String {
    ["target type: ", "as JSON: ", "query string: "]
        .iter()
        .find_map(|p| text.split_once(p).map(|(_, m)| m.to_owned()))
        .unwrap_or_else(|| text.to_owned())
}
