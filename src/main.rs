//! The `ferry` binary: parse arguments, set up tracing, run, map errors to
//! exit codes. All logic lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    let level = match std::env::var("FERRY_LOG").ok().as_deref() {
        Some("trace") => tracing::Level::TRACE,
        Some("debug") => tracing::Level::DEBUG,
        Some("warn") => tracing::Level::WARN,
        Some("error") => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    // a serial console, a pipe or journald (which stamps lines itself):
    // plain lines, no colour codes, no timestamps
    let plain = std::env::var_os("JOURNAL_STREAM").is_some()
        || !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(!plain && std::env::var_os("NO_COLOR").is_none());
    if plain {
        fmt.without_time().init();
    } else {
        fmt.init();
    }
    match ferry::cli::run(std::env::args_os()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ferry: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
