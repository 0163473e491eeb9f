//! Nothing secret reaches the logs: AppSecret, codes, tokens, session keys.
//! Captures every tracing event (all levels) of a run with good and failing
//! logins, and of every other test of this binary running meanwhile.

use crate::support;

use serde_json::json;
use support::app::{APP_ID, APP_SECRET, AppOptions, encrypt_for, raw_data, sign, spawn_app};
use weapp_gateway::wechat::Faults;

#[tokio::test]
async fn logs_never_contain_secrets() {
    let captured = support::logs::capture_logs();

    let app = spawn_app(AppOptions::redis("no_secrets")).await;
    let mut secrets = vec![APP_SECRET.to_owned()];
    let raw = raw_data("secretive");

    let ok = app.mint("o_secretive_user");
    assert_eq!(app.compat_login(&ok.code, &raw, &sign(&raw, &ok.session_key)).await.status, 200);
    assert_eq!(app.compat_me(&ok.code).await.status, 200);
    secrets.extend([ok.code.clone(), ok.session_key.clone()]);

    let bad = app.mint("o_secretive_user");
    app.compat_login(&bad.code, &raw, &sign(&raw, "wrong")).await;
    secrets.extend([bad.code.clone(), bad.session_key.clone()]);

    let t = app.mint("o_secretive_user");
    let login = app.token_login(&json!({"code": t.code})).await;
    let token = login.body["token"].as_str().unwrap().to_owned();
    app.token_me(&token).await;
    app.logout(&token).await;
    secrets.extend([t.code.clone(), t.session_key.clone(), token]);

    // Open-data failures, up to and past the budget: the kind is logged
    // (debug), never the key, the iv or the data.
    let d = app.mint("o_secretive_user");
    let login = app.token_login(&json!({"code": d.code})).await;
    let token = login.body["token"].as_str().unwrap().to_owned();
    let other_key = app.mint("o_secretive_other").session_key;
    let bad = encrypt_for(&other_key, json!({"openId": "o_secretive_user"}), APP_ID);
    for _ in 0..6 {
        app.post("/applet/open-data/decrypt", &[("X-WX-Skey", &token)], &bad).await;
    }
    for field in ["encryptedData", "iv"] {
        secrets.push(bad[field].as_str().unwrap().to_owned());
    }
    secrets.extend([d.code.clone(), d.session_key.clone(), token, other_key]);

    for faults in [
        Faults::default().with_http_500(),
        Faults::default().with_busy(5),
        Faults::default().with_delay_ms(3_000),
    ] {
        app.fake.set_faults(faults);
        let m = app.mint("o_secretive_user");
        app.compat_login(&m.code, &raw, &sign(&raw, &m.session_key)).await;
        secrets.extend([m.code.clone(), m.session_key.clone()]);
    }

    let logs = captured.text();
    assert!(logs.contains("request"), "the access log should have lines:\n{logs}");
    assert!(logs.contains("status=200") && logs.contains("status=504"), "{logs}");
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "log leaked {secret}:\n{logs}");
    }
    assert!(!logs.contains("o_secretive_user"), "raw openids must be hashed in logs:\n{logs}");
    assert!(logs.contains("open data refused"), "{logs}");
    assert!(logs.contains("kind=\"bad_padding\"") || logs.contains("kind=\"not_json\""), "{logs}");
    assert!(logs.contains("too many open-data decryption failures"), "{logs}");
}
