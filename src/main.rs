//! The `weapp-gateway` binary: thin CLI over the library.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weapp_gateway::config::{Config, LogFormat};
use weapp_gateway::server::{Application, shutdown_signal};
use weapp_gateway::tls::ReloadableCert;
use weapp_gateway::wechat::FakeWeChat;

/// The session gateway for WeChat mini-program backends.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (default: config/default.toml); `WEAPP__…` env overrides it.
    #[arg(long, global = true, env = "WEAPP_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway (the default).
    Serve,
    /// Load and validate the configuration, print it with secrets redacted.
    CheckConfig,
    /// Run the fake WeChat API server on its own.
    FakeWechat {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:5758")]
        listen: SocketAddr,
        /// The AppID the fake accepts.
        #[arg(long, default_value = "wx_dev_appid")]
        appid: String,
        /// The AppSecret the fake accepts.
        #[arg(long, env = "WEAPP_FAKE_SECRET", default_value = "dev-secret")]
        secret: String,
        /// A word that makes msgSecCheck answer "risky" (repeatable).
        #[arg(long = "risky-word")]
        risky_words: Vec<String>,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
        Command::CheckConfig => check_config(cli.config),
        Command::FakeWechat { listen, appid, secret, risky_words } => {
            init_logging(LogFormat::Text);
            let listener = match tokio::net::TcpListener::bind(listen).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: cannot listen on {listen}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            tracing::info!(%listen, "fake WeChat API listening");
            let fake = FakeWeChat::new(appid, secret);
            fake.set_risky_words(risky_words);
            tokio::select! {
                r = fake.serve(listener) => match r {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => { eprintln!("error: {e}"); ExitCode::FAILURE }
                },
                () = shutdown_signal() => ExitCode::SUCCESS,
            }
        }
    }
}

/// `check-config`: load and validate the configuration, and read the
/// `[server.tls]` certificate and key as `serve` would, so a bad PEM file is
/// found before a restart. Exit code 2 on any error.
fn check_config(config_path: Option<PathBuf>) -> ExitCode {
    let config = match Config::load(config_path.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(tls) = &config.server.tls
        && let Err(e) = ReloadableCert::load(tls)
    {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    println!("{config:#?}");
    println!("config OK");
    ExitCode::SUCCESS
}

async fn serve(config_path: Option<PathBuf>) -> ExitCode {
    // Under systemd (Type=exec) `systemctl reload` may send SIGHUP as soon as
    // the process runs, before the server installs its reload handler; the
    // default action would kill it. Registering with tokio once keeps a
    // handler in place for the rest of the process (tokio never restores the
    // default), so an early HUP is dropped instead.
    #[cfg(unix)]
    if let Err(e) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        eprintln!("warning: cannot handle SIGHUP: {e}");
    }
    let config = match Config::load(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.server.log_format);
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(addr = %app.local_addr(), "weapp-gateway listening");
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}
