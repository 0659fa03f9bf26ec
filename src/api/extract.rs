//! Extractors whose refusals are [`ApiError`]s, so every 4xx is JSON in the one error shape.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::ApiError;

/// A JSON body that must be an object. serde's derived structs also take an array, filling the
/// fields by position (`["alice"]` would be a spawn for alice), which no caller means.
pub struct JsonObject<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonObject<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        // Checked for syntax but not built into a tree: the fields are read once, into `T`.
        let Json(raw) = Json::<Box<RawValue>>::from_request(request, state).await?;
        let text = raw.get();
        let found = match text.as_bytes().first() {
            Some(b'{') => None,
            Some(b'[') => Some("an array"),
            Some(b'"') => Some("a string"),
            Some(b't' | b'f') => Some("a boolean"),
            Some(b'n') => Some("null"),
            _ => Some("a number"),
        };
        if let Some(found) = found {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("the body is {found}; send a JSON object with the fields in /openapi.yaml"),
            ));
        }
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text))
            .map(JsonObject)
            .map_err(|err| {
                let at = err.path().to_string();
                let field = (at != ".").then_some(at);
                let message =
                    format!("{}; fix the JSON body; see /openapi.yaml for its fields", err.into_inner());
                let error = ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message);
                match field {
                    Some(field) => error.field(field),
                    None => error,
                }
            })
    }
}

/// Path parameters; one that is not valid percent-encoded UTF-8 (`%ff`) is refused with a
/// JSON 400. (An empty name, `/api/v1/users//clusters`, is refused by `Owner::checked`.)
pub struct PathParams<T>(pub T);

impl<T, S> FromRequestParts<S> for PathParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(PathParams(value)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                format!("{}; percent-encode the path's names as UTF-8", rejection.body_text()),
            )),
        }
    }
}

/// `/api/v1/users/{user}/...`
#[derive(Debug, Deserialize)]
pub struct UserPath {
    pub user: String,
}

/// `/api/v1/users/{user}/servers/{server}`
#[derive(Debug, Deserialize)]
pub struct ServerPath {
    pub user: String,
    pub server: String,
}
