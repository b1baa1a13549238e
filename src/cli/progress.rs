//! Progress bars on a terminal (host builds); nothing otherwise.

#[cfg(feature = "host")]
pub(super) type Bar = indicatif::ProgressBar;

#[cfg(feature = "host")]
pub(super) fn bar(total: u64, what: &str, quiet: bool) -> Option<Bar> {
    use std::io::IsTerminal as _;
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template(
        "{msg:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    b.set_style(style);
    b.set_message(what.to_string());
    Some(b)
}

/// Device builds have no bar; a no-op type with the same calls.
#[cfg(not(feature = "host"))]
#[derive(Clone)]
pub(super) struct Bar;

#[cfg(not(feature = "host"))]
impl Bar {
    pub(super) fn inc(&self, _: u64) {}
    pub(super) fn finish_and_clear(&self) {}
}

#[cfg(not(feature = "host"))]
pub(super) fn bar(_: u64, _: &str, _: bool) -> Option<Bar> {
    None
}
