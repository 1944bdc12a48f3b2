//! Tidegate load generator.
//!
//! ```text
//! tidegate-bench subs        --target tidegate|pushpin|nchan --transport sse|ws --addr A --n N …
//! tidegate-bench subs        --jitter-period 15 --outage 2 …   (resume under jitter, Tidegate only)
//! tidegate-bench pub         --target tidegate|pushpin|nchan --addr A --rate R --batch B …
//! tidegate-bench grip-origin --listen 127.0.0.1:7999
//! ```
//! Every mode is bounded by `--duration` (and `pub` by `--count`). The scenarios and the
//! report are driven by `bench/run.sh`.

mod common;
mod jitter;
mod origin;
mod publish;
mod subs;

fn main() -> anyhow::Result<()> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = raw.first() else {
        eprintln!("usage: tidegate-bench subs|pub|grip-origin [--key value]…");
        std::process::exit(2);
    };
    let args = common::Args::parse(&raw[1..])?;
    match cmd.as_str() {
        "subs" => subs::run(&args),
        "pub" => publish::run(&args),
        "grip-origin" => origin::run(&args),
        other => anyhow::bail!("unknown command `{other}`"),
    }
}
