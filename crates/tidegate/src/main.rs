//! `tidegate [--config FILE]`: settings → telemetry → build → serve → wait for a
//! signal → drain.
use std::path::PathBuf;
use std::process::ExitCode;

#[cfg(all(target_os = "linux", feature = "jemalloc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const USAGE: &str = "usage: tidegate [--config FILE]\n\
Configuration: a TOML file (--config or TIDEGATE_CONFIG) and environment variables\n\
(RIG's names such as INBOUND_PORT, JWT_SECRET_KEY, EXTRACTORS, and TIDEGATE_*). See README.md.";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut file: Option<PathBuf> = std::env::var_os("TIDEGATE_CONFIG").map(PathBuf::from);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => match args.next() {
                Some(f) => file = Some(PathBuf::from(f)),
                None => {
                    eprintln!("--config needs a file\n{USAGE}");
                    return ExitCode::from(64);
                }
            },
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--version" | "-V" => {
                println!("tidegate {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument `{other}`\n{USAGE}");
                return ExitCode::from(64);
            }
        }
    }
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let cfg = match tidegate::config::Config::load(file.as_deref(), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tidegate: invalid configuration: {e}");
            return ExitCode::from(78);
        }
    };
    let format = if cfg.log_format == "json" {
        tidegate_telemetry::LogFormat::Json
    } else {
        tidegate_telemetry::LogFormat::Text
    };
    let level = match tidegate_telemetry::init_tracing(&cfg.log_level, format) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("tidegate: invalid configuration: setting `LOG_LEVEL`: {e}");
            return ExitCode::from(78);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tidegate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let running = match tidegate::start(cfg, Some(level)).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("tidegate: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        // Tests and scripts read the bound addresses from this line.
        println!(
            "tidegate listening inbound={} internal={}",
            running.inbound, running.internal
        );
        wait_for_signal().await;
        tracing::info!("Shutting down");
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
