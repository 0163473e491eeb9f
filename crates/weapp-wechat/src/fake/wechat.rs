//! WeChat's endpoints as the fake serves them: `jscode2session`,
//! `stable_token`, `getuserphonenumber`, `msg_sec_check`, with WeChat's
//! errcodes and the injected faults.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::state::{
    DEFAULT_CODE_TTL, DEFAULT_TOKEN_TTL, EXPIRED_TOKEN_MEMORY, TOKEN_EARLY_RENEWAL, TokenEntry,
    random_bytes, unix_seconds,
};
use super::{FakeWeChat, GET_PHONE_NUMBER, JSCODE2SESSION, MSG_SEC_CHECK, STABLE_TOKEN};

/// What a WeChat endpoint should do after faults were applied.
pub(super) enum FaultOutcome {
    Proceed,
    Answer(Response),
}

impl FakeWeChat {
    /// The answer of `stable_token` for this request body.
    pub(super) fn stable_token(&self, body: &Value) -> Value {
        let field = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or("");
        if field("grant_type") != "client_credential" {
            return errcode(40002, "invalid grant_type");
        }
        let (appid, secret) = (field("appid"), field("secret"));
        if appid.is_empty() {
            return errcode(41002, "appid missing");
        }
        if appid != self.state.app_id {
            return errcode(40013, "invalid appid");
        }
        if secret.is_empty() {
            return errcode(41004, "appsecret missing");
        }
        if secret != self.state.secret {
            return errcode(40125, "invalid appsecret");
        }
        let force = body.get("force_refresh").and_then(Value::as_bool).unwrap_or(false);
        let Ok(bytes) = random_bytes::<32>() else {
            return errcode(-1, "system error");
        };
        let fresh_token = URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut inner = self.lock();
        let ttl = inner.token_ttl.unwrap_or(DEFAULT_TOKEN_TTL);
        if !force {
            // Normal mode: the current token while it is not about to expire.
            let early = TOKEN_EARLY_RENEWAL.min(ttl / 2);
            let current = inner.newest_token.as_ref().and_then(|t| {
                let entry = inner.tokens.get(t)?;
                let left = entry.expires_at.checked_duration_since(now)?;
                (!entry.revoked && left > early).then(|| (t.clone(), left))
            });
            if let Some((token, left)) = current {
                return json!({"access_token": token, "expires_in": left.as_secs().max(1)});
            }
        } else {
            // A forced refresh invalidates the tokens handed out before.
            for entry in inner.tokens.values_mut() {
                entry.revoked = true;
            }
        }
        inner
            .tokens
            .retain(|_, e| now.saturating_duration_since(e.expires_at) < EXPIRED_TOKEN_MEMORY);
        inner
            .tokens
            .insert(fresh_token.clone(), TokenEntry { expires_at: now + ttl, revoked: false });
        inner.newest_token = Some(fresh_token.clone());
        json!({"access_token": fresh_token, "expires_in": ttl.as_secs().max(1)})
    }

    /// Checks the `access_token` query parameter like WeChat: `Err(answer)` when unusable.
    pub(super) fn check_access_token(&self, params: &HashMap<String, String>) -> Result<(), Value> {
        let token = params.get("access_token").map(String::as_str).unwrap_or("");
        if token.is_empty() {
            return Err(errcode(41001, "access_token missing"));
        }
        let inner = self.lock();
        match inner.tokens.get(token) {
            None => {
                Err(errcode(40001, "invalid credential, access_token is invalid or not latest"))
            }
            Some(entry) if entry.revoked => {
                Err(errcode(40001, "invalid credential, access_token is invalid or not latest"))
            }
            Some(entry) if Instant::now() >= entry.expires_at => {
                Err(errcode(42001, "access_token expired"))
            }
            Some(_) => Ok(()),
        }
    }

    /// The answer of `getuserphonenumber` for this body (consumes the code).
    pub(super) fn phone_number(&self, body: &Value) -> Value {
        let Some(code) = body.get("code").and_then(Value::as_str).filter(|c| !c.is_empty()) else {
            return errcode(47001, "data format error");
        };
        let mut inner = self.lock();
        let ttl = inner.code_ttl.unwrap_or(DEFAULT_CODE_TTL);
        let Some(entry) = inner.phone_codes.get_mut(code) else {
            return errcode(40029, "invalid code");
        };
        if entry.used || entry.minted_at.elapsed() > ttl {
            return errcode(40029, "invalid code");
        }
        entry.used = true;
        let prefix = format!("+{}", entry.country_code);
        let pure = entry.phone_number.strip_prefix(&prefix).unwrap_or(&entry.phone_number).trim();
        json!({
            "errcode": 0,
            "errmsg": "ok",
            "phone_info": {
                "phoneNumber": entry.phone_number,
                "purePhoneNumber": pure,
                "countryCode": entry.country_code,
                "watermark": {"timestamp": unix_seconds(), "appid": self.state.app_id},
            },
        })
    }

    /// The answer of `msg_sec_check` (v2) for this body.
    pub(super) fn msg_sec_check(&self, body: &Value) -> Value {
        let content = body.get("content").and_then(Value::as_str);
        let version = body.get("version").and_then(Value::as_i64);
        let scene = body.get("scene").and_then(Value::as_i64);
        let openid = body.get("openid").and_then(Value::as_str).unwrap_or("");
        let (Some(content), Some(2), Some(1..=4)) = (content, version, scene) else {
            return errcode(47001, "data format error");
        };
        if openid.is_empty() {
            return errcode(40003, "invalid openid");
        }
        let hit = self.lock().risky_words.iter().find(|w| content.contains(w.as_str())).cloned();
        let model = json!({"strategy": "content_model", "errcode": 0, "suggest": "pass",
                           "label": 100, "prob": 0});
        let trace_id = random_bytes::<12>().map(|b| URL_SAFE_NO_PAD.encode(b)).unwrap_or_default();
        match hit {
            Some(word) => json!({
                "errcode": 0,
                "errmsg": "ok",
                "result": {"suggest": "risky", "label": 20001},
                "detail": [model, {"strategy": "keyword", "errcode": 0, "suggest": "risky",
                                   "label": 20001, "level": 90, "keyword": word}],
                "trace_id": trace_id,
            }),
            None => json!({
                "errcode": 0,
                "errmsg": "ok",
                "result": {"suggest": "pass", "label": 100},
                "detail": [model],
                "trace_id": trace_id,
            }),
        }
    }

    /// Counts a call of a WeChat endpoint and applies the faults in effect.
    ///
    /// Every WeChat endpoint calls this first (so new endpoints get counters
    /// and faults for free). The lock is released before sleeping.
    pub(super) async fn enter(&self, endpoint: &str) -> FaultOutcome {
        let (delay_ms, http_500, busy, forced) = {
            let mut inner = self.lock();
            *inner.calls.entry(endpoint.to_owned()).or_insert(0) += 1;
            let busy = inner.faults.busy > 0;
            if busy {
                inner.faults.busy -= 1;
            }
            let forced = (inner.faults.errcode != 0)
                .then(|| errcode(inner.faults.errcode, &inner.faults.errmsg));
            (inner.faults.delay_ms, inner.faults.http_500, busy, forced)
        };
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        if http_500 {
            return FaultOutcome::Answer(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "text/html")],
                    "<html><body>500 Internal Server Error</body></html>",
                )
                    .into_response(),
            );
        }
        if busy {
            return FaultOutcome::Answer(wechat_json(errcode(-1, "system error")));
        }
        if let Some(answer) = forced {
            return FaultOutcome::Answer(wechat_json(answer));
        }
        FaultOutcome::Proceed
    }

    /// The answer of `jscode2session` for these query parameters (consumes the code).
    pub(super) fn exchange(&self, params: &HashMap<String, String>) -> Value {
        let param = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
        let (appid, secret, code, grant_type) =
            (param("appid"), param("secret"), param("js_code"), param("grant_type"));
        if appid.is_empty() {
            return errcode(41002, "appid missing");
        }
        if appid != self.state.app_id {
            return errcode(40013, "invalid appid");
        }
        if secret.is_empty() {
            return errcode(41004, "appsecret missing");
        }
        if secret != self.state.secret {
            return errcode(40125, "invalid appsecret");
        }
        if code.is_empty() {
            return errcode(41008, "missing code");
        }
        if grant_type != "authorization_code" {
            return errcode(40002, "invalid grant_type");
        }
        let mut inner = self.lock();
        let ttl = inner.code_ttl.unwrap_or(DEFAULT_CODE_TTL);
        let Some(entry) = inner.codes.get_mut(code) else {
            return errcode(40029, "invalid code");
        };
        if entry.minted_at.elapsed() > ttl {
            return errcode(40029, "invalid code");
        }
        if entry.used {
            return errcode(40163, "code been used");
        }
        entry.used = true;
        let mut body = json!({"openid": entry.openid, "session_key": entry.session_key});
        if let Some(unionid) = &entry.unionid {
            body["unionid"] = Value::String(unionid.clone());
        }
        body
    }
}

pub(super) fn query_params(query: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect()
}

/// A WeChat POST body: a JSON object whatever the Content-Type, else `Err(47001)`.
pub(super) fn wechat_body(body: &[u8]) -> Result<Value, Value> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) if value.is_object() => Ok(value),
        _ => Err(errcode(47001, "data format error")),
    }
}

pub(super) fn errcode(code: i64, msg: &str) -> Value {
    json!({"errcode": code, "errmsg": msg})
}

/// WeChat answers 200 with JSON labelled `text/plain`; so does the fake.
pub(super) fn wechat_json(body: Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], body.to_string()).into_response()
}

pub(super) async fn jscode2session(
    State(fake): State<FakeWeChat>,
    RawQuery(query): RawQuery,
) -> Response {
    if let FaultOutcome::Answer(resp) = fake.enter(JSCODE2SESSION).await {
        return resp;
    }
    let answer = fake.exchange(&query_params(query.as_deref()));
    let answer_delay_ms = fake.lock().faults.answer_delay_ms;
    if answer_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(answer_delay_ms)).await;
    }
    wechat_json(answer)
}

pub(super) async fn stable_token_http(State(fake): State<FakeWeChat>, body: Bytes) -> Response {
    if let FaultOutcome::Answer(resp) = fake.enter(STABLE_TOKEN).await {
        return resp;
    }
    wechat_json(match wechat_body(&body) {
        Ok(body) => fake.stable_token(&body),
        Err(answer) => answer,
    })
}

pub(super) async fn phone_number_http(
    State(fake): State<FakeWeChat>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if let FaultOutcome::Answer(resp) = fake.enter(GET_PHONE_NUMBER).await {
        return resp;
    }
    let answer = fake
        .check_access_token(&query_params(query.as_deref()))
        .and_then(|()| wechat_body(&body))
        .map(|body| fake.phone_number(&body));
    wechat_json(answer.unwrap_or_else(|err| err))
}

pub(super) async fn msg_sec_check_http(
    State(fake): State<FakeWeChat>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if let FaultOutcome::Answer(resp) = fake.enter(MSG_SEC_CHECK).await {
        return resp;
    }
    let answer = fake
        .check_access_token(&query_params(query.as_deref()))
        .and_then(|()| wechat_body(&body))
        .map(|body| fake.msg_sec_check(&body));
    wechat_json(answer.unwrap_or_else(|err| err))
}
