//! The OpenAPI 3 description of the API, generated from the handlers' annotations (utoipa),
//! served at `/api/schema/` with Swagger UI at `/api/schema/swagger-ui/` (assets vendored
//! in the binary: no network at build or run time).

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The error envelope every failure carries.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// `invalid_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `validation_error`, `payload_too_large`, `rate_limit_exceeded`, `internal_error`,
    /// `service_unavailable`.
    error: String,
    message: String,
    details: serde_json::Value,
    timestamp: String,
}

#[derive(Debug)]
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A client token (POST /api/auth/client/) or an operator token \
                         (POST /api/auth/token/). `Authorization: JWT <token>` works too.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "facegate terminal API",
        description = "The reference face-recognition service's REST + WebSocket API, served on the terminal (contract: shared/spec/API.md).",
    ),
    paths(
        super::health,
        super::analytics::prometheus,
        super::cameras::list,
        super::cameras::snapshot,
        super::cameras::stream,
        super::auth::client_login,
        super::auth::operator_login,
        super::auth::operator_refresh,
        super::sessions::create_enrollment,
        super::sessions::process_enrollment_frame,
        super::sessions::create_authentication,
        super::sessions::process_authentication_frame,
        super::sessions::status,
        super::sessions::cancel,
        super::ws::upgrade,
        super::events::upgrade,
        super::enrollments::list,
        super::enrollments::get,
        super::enrollments::delete,
        super::analytics::authentication_metrics,
        super::analytics::system_metrics,
        super::admin::list_clients,
        super::admin::add_client,
        super::admin::rotate_keys,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Security),
    tags(
        (name = "auth", description = "Client and operator tokens"),
        (name = "enrollment", description = "Enrollment sessions"),
        (name = "authentication", description = "1:1 verification and 1:N identification sessions"),
        (name = "sessions", description = "Session status, cancel, WebSocket"),
        (name = "events", description = "Access decisions and system events for door controllers"),
        (name = "enrollments", description = "Stored enrollments"),
        (name = "analytics", description = "Figures from audit rows and the running daemon"),
        (name = "admin", description = "Operators only: API clients, key rotation"),
        (name = "health", description = "Liveness of the daemon, Prometheus metrics"),
        (name = "cameras", description = "The terminal's own cameras: health, snapshot, MJPEG preview"),
    )
)]
pub struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
