//! Errors in the OpenAI shape: `{"error": {"message", "type", "param", "code"}}` with the real HTTP status, so an
//! OpenAI SDK raises its own exception class for each (400 `BadRequestError`, 404 `NotFoundError`, 503 ...).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::workers::WorkError;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault, when there is one.
    pub param: Option<&'static str>,
    /// A stable, machine-readable code.
    pub code: &'static str,
    /// Seconds after which a retry may succeed (a `retry-after` header).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            param: None,
            code,
            retry_after: None,
        }
    }

    /// 400: a request field is wrong.
    pub fn invalid(param: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            param: Some(param),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503: try again later (the worker queue is full, or the models are still loading).
    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// 500: the server failed; the message says what failed, never a backtrace.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    /// The same error naming the request field at fault.
    pub fn with_param(self, param: &'static str) -> ApiError {
        ApiError {
            param: Some(param),
            ..self
        }
    }

    pub fn with_code(self, code: &'static str) -> ApiError {
        ApiError { code, ..self }
    }

    /// The JSON body: `{"error": {"message", "type", "param", "code"}}`.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind(),
            "param": self.param,
            "code": self.code,
        }})
    }

    /// OpenAI's error `type` for a status.
    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 404 | 405 | 409 | 413 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            503 => "service_unavailable",
            _ => "server_error",
        }
    }
}

impl From<WorkError> for ApiError {
    fn from(error: WorkError) -> ApiError {
        match error {
            WorkError::Busy => ApiError::unavailable("every worker is busy; retry shortly", 1),
            WorkError::Panicked(message) => ApiError::internal(format!("the work failed: {message}")),
            WorkError::Stopped => ApiError::unavailable("the server is shutting down", 5),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_the_openai_shape_and_a_retry_after_when_busy() {
        let response = ApiError::unavailable("busy", 2).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(ApiError::invalid("input", "x").kind(), "invalid_request_error");
        assert_eq!(ApiError::invalid("input", "x").param, Some("input"));
        let method = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "x");
        assert_eq!(method.kind(), "invalid_request_error");
    }
}
