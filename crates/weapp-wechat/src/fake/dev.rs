//! The `/dev/*` endpoints: mint login and phone codes, encrypt open data,
//! set risky words, read the call counters, set the faults.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::crypto::DecryptError;

use super::FakeWeChat;
use super::state::{Faults, random_bytes};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MintRequest {
    openid: String,
    #[serde(default)]
    session_key: Option<String>,
    #[serde(default)]
    unionid: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PhoneCodeRequest {
    #[serde(rename = "phoneNumber")]
    phone_number: String,
    #[serde(default = "default_country_code", rename = "countryCode")]
    country_code: String,
}

pub(super) fn default_country_code() -> String {
    "86".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RiskyWordsRequest {
    words: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EncryptRequest {
    session_key: String,
    data: Value,
    #[serde(default)]
    iv: Option<String>,
}

/// Parses a `/dev/*` request body, which must be a JSON object.
pub(super) fn parse_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    if !value.is_object() {
        return Err("the body must be a JSON object".into());
    }
    serde_json::from_value(value).map_err(|e| format!("invalid body: {e}"))
}

pub(super) fn dev_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

pub(super) async fn mint_phone_code_http(State(fake): State<FakeWeChat>, body: Bytes) -> Response {
    let req: PhoneCodeRequest = match parse_object(&body) {
        Ok(req) => req,
        Err(msg) => return dev_error(StatusCode::BAD_REQUEST, &msg),
    };
    if req.phone_number.is_empty() || req.country_code.is_empty() {
        return dev_error(StatusCode::BAD_REQUEST, "phoneNumber and countryCode must not be empty");
    }
    match fake.try_mint_phone(req.phone_number, req.country_code) {
        Ok(code) => axum::Json(json!({ "code": code })).into_response(),
        Err(e) => dev_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("random number generator failed: {e}"),
        ),
    }
}

pub(super) async fn get_risky_words_http(State(fake): State<FakeWeChat>) -> Response {
    axum::Json(json!({ "words": fake.risky_words() })).into_response()
}

pub(super) async fn set_risky_words_http(State(fake): State<FakeWeChat>, body: Bytes) -> Response {
    match parse_object::<RiskyWordsRequest>(&body) {
        Ok(req) => {
            fake.set_risky_words(req.words);
            axum::Json(json!({ "words": fake.risky_words() })).into_response()
        }
        Err(msg) => dev_error(StatusCode::BAD_REQUEST, &msg),
    }
}

pub(super) async fn encrypt_http(State(fake): State<FakeWeChat>, body: Bytes) -> Response {
    let req: EncryptRequest = match parse_object(&body) {
        Ok(req) => req,
        Err(msg) => return dev_error(StatusCode::BAD_REQUEST, &msg),
    };
    let iv = match req.iv {
        Some(iv) => iv,
        None => match random_bytes::<16>() {
            Ok(bytes) => STANDARD.encode(bytes),
            Err(e) => {
                return dev_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("random number generator failed: {e}"),
                );
            }
        },
    };
    match fake.encrypt_user_data(&req.session_key, req.data, &iv) {
        Ok(sealed) => axum::Json(sealed).into_response(),
        Err(DecryptError::NotJson) => {
            dev_error(StatusCode::BAD_REQUEST, "data must be a JSON object")
        }
        Err(e) => dev_error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

pub(super) async fn mint_code_http(State(fake): State<FakeWeChat>, body: Bytes) -> Response {
    let req: MintRequest = match parse_object(&body) {
        Ok(req) => req,
        Err(msg) => return dev_error(StatusCode::BAD_REQUEST, &msg),
    };
    if req.openid.is_empty() {
        return dev_error(StatusCode::BAD_REQUEST, "openid must not be empty");
    }
    if let Some(key) = &req.session_key {
        match STANDARD.decode(key) {
            Ok(bytes) if bytes.len() == 16 => {}
            _ => {
                return dev_error(
                    StatusCode::BAD_REQUEST,
                    "session_key must be the base64 of 16 bytes",
                );
            }
        }
    }
    match fake.try_mint(req.openid, req.session_key, req.unionid) {
        Ok(minted) => axum::Json(minted).into_response(),
        Err(e) => dev_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("random number generator failed: {e}"),
        ),
    }
}

pub(super) async fn stats_http(State(fake): State<FakeWeChat>) -> Response {
    axum::Json(fake.stats()).into_response()
}

pub(super) async fn get_faults_http(State(fake): State<FakeWeChat>) -> Response {
    axum::Json(fake.faults()).into_response()
}

pub(super) async fn set_faults_http(State(fake): State<FakeWeChat>, body: Bytes) -> Response {
    match parse_object::<Faults>(&body) {
        Ok(faults) => {
            fake.set_faults(faults.clone());
            axum::Json(faults).into_response()
        }
        Err(msg) => dev_error(StatusCode::BAD_REQUEST, &msg),
    }
}
