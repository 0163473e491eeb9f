//! The mini-program client's side of the compat dialect, for the tests and
//! the bench: the very helpers `weapp-session` publishes under `test-util`,
//! so the gateway's suites sign the way a team's tests do.

pub use weapp_session::test_util::{encode_uri_component, sign_raw_data as sign};
