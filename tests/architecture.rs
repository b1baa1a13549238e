//! The core boundary, enforced: every module ARCHITECTURE.md calls core is
//! scanned (outside its unit tests and comments) for I/O, clocks, threads,
//! processes, network, async runtimes and imports of edge modules. A core
//! module that needs one of those has to move it to an edge, or leave the
//! core list in ARCHITECTURE.md, where a reviewer sees it.

use std::path::PathBuf;

/// The core, as `src/` paths; ARCHITECTURE.md must list each as a module path.
const CORE: &[(&str, &str)] = &[
    ("bundle/format.rs", "bundle::format"),
    ("bundle/manifest.rs", "bundle::manifest"),
    ("bundle/zframe.rs", "bundle::zframe"),
    ("bundle/keys.rs", "bundle::keys"),
    ("update/machine.rs", "update::machine"),
    ("update/persist.rs", "update::persist"),
    ("update/policy.rs", "update::policy"),
    ("update/engine.rs", "update::engine"),
    ("update/mutant.rs", "update::mutant"),
    ("board/mod.rs", "board"),
    ("board/bootenv.rs", "board::bootenv"),
    ("board/ubootenv.rs", "board::ubootenv"),
    ("board/grubenv.rs", "board::grubenv"),
    ("board/rpi.rs", "board::rpi"),
    ("board/gpt.rs", "board::gpt"),
    ("board/script.rs", "board::script"),
    ("health/mod.rs", "health"),
    ("feed/mod.rs", "feed"),
    ("daemon/window.rs", "daemon::window"),
    ("net/url.rs", "net::url"),
    ("net/proxy.rs", "net::proxy"),
    ("settings.rs", "settings"),
    ("yaml.rs", "yaml"),
    ("backoff.rs", "backoff"),
    ("io/bmap.rs", "io::bmap"),
    ("error.rs", "error"),
];

/// What a core module never names: I/O, clocks, threads, processes, network,
/// runtimes, the environment, and the edge modules.
const FORBIDDEN: &[&str] = &[
    "std::fs",
    "std::process",
    "std::net",
    "std::thread",
    "std::env",
    "std::io::stdin",
    "SystemTime",
    "Instant",
    "tokio",
    "hyper",
    "rustls",
    "nix::",
    "libc::",
    "crate::io",
    "crate::cli",
    "crate::daemon",
    "crate::kube",
    "crate::net::http",
    "crate::bundle::reader",
    "crate::bundle::writer",
    "crate::feed::publish",
    "tracing_subscriber",
];

fn src(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(p)
}

/// Source lines outside `#[cfg(test)]` modules, without comments.
fn code(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break; // unit tests sit at the end of each file
        }
        let l = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        out.push((i + 1, l.to_string()));
    }
    out
}

#[test]
fn core_modules_do_no_io_and_import_no_edge() {
    let mut bad = Vec::new();
    for (file, _) in CORE {
        let text = std::fs::read_to_string(src(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        for (n, line) in code(&text) {
            for f in FORBIDDEN {
                if line.contains(f) {
                    bad.push(format!("src/{file}:{n}: {f}: {}", line.trim()));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "the core does I/O or imports an edge:\n{}",
        bad.join("\n")
    );
}

#[test]
fn architecture_md_lists_the_same_core() {
    let doc =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .expect("ARCHITECTURE.md");
    for (_, module) in CORE {
        assert!(
            doc.contains(&format!("`{module}`")),
            "ARCHITECTURE.md does not list core module `{module}`"
        );
    }
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .expect("README.md");
    assert!(
        readme.contains("ARCHITECTURE.md"),
        "README must link ARCHITECTURE.md"
    );
}

/// The scan itself finds what it is for (so the test above cannot pass by
/// scanning nothing).
#[test]
fn the_scan_catches_a_forbidden_line() {
    let sample = "use std::fs::File;\n// std::process in a comment is fine\n#[cfg(test)]\nmod tests { use std::thread; }\n";
    let hits: Vec<_> = code(sample)
        .into_iter()
        .filter(|(_, l)| FORBIDDEN.iter().any(|f| l.contains(f)))
        .collect();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].0, 1);
}
