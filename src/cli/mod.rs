//! Command-line interface: argument definitions and dispatch. One file per
//! command group; each returns the process exit code or an error.

mod bundle;
#[cfg(feature = "host")]
mod demo;
#[cfg(feature = "host")]
mod image;
#[cfg(feature = "host")]
mod key;
mod progress;
mod slots;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::error::Error;

#[derive(Parser, Debug)]
#[command(
    name = "ferry",
    version,
    about = "A/B updates for k3s boards: signed streaming bundles, trial boots, automatic rollback"
)]
struct Cli {
    /// Device configuration file (before the command).
    #[arg(long, default_value = crate::io::config::DEFAULT_PATH)]
    config: PathBuf,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Signing keys (host build only).
    #[cfg(feature = "host")]
    #[command(subcommand)]
    Key(KeyCmd),
    /// Build, verify and inspect bundles.
    #[command(subcommand)]
    Bundle(BundleCmd),
    /// Show slots, versions, boot state and the last result.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Install a bundle (file, block device, or http(s) URL) into the
    /// inactive slot and arm a trial boot.
    Install {
        file: PathBuf,
        /// Do not reboot after arming the trial boot.
        #[arg(long)]
        no_reboot: bool,
    },
    /// Boot-time health gate: on a trial boot, run the health checks, then
    /// commit, or mark bad and reboot back. Does nothing otherwise.
    Check,
    /// First boot (and every boot): apply the provisioned node settings
    /// (hostname, k3s config with its token 0600, SSH keys, Wi-Fi, NTP)
    /// before k3s starts. Idempotent: unchanged files are not rewritten.
    Firstboot {
        /// The provisioned settings (`node.toml`, `authorized_keys`) on the
        /// data partition.
        #[arg(long, default_value = "/data/provision")]
        provision: PathBuf,
        /// Where the generated `/etc` files go (a writable overlay or `/`).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Also set the running system's host name.
        #[arg(long)]
        set_hostname: bool,
    },
    /// First boot (and every boot): grow the data partition to the end of
    /// the disk and its ext4 file system (mounted at --mount) with it, online.
    /// Idempotent; safe against a power cut at any point.
    GrowData {
        /// Where the data partition is mounted (its file system is grown too).
        #[arg(long, default_value = "/data")]
        mount: PathBuf,
        /// Only the partition table, not the file system.
        #[arg(long)]
        table_only: bool,
    },
    /// The update daemon: trial gate, feed polling, streaming OTA, reboots.
    Daemon {
        /// One pass and exit.
        #[arg(long)]
        once: bool,
    },
    /// Talk to a running daemon: status, progress, check-now, pause, resume, install URL.
    Ctl { cmd: String, url: Option<String> },
    /// Write a disk image (raw or .img.zst) to a block device or file, sparse-aware, then verify.
    #[cfg(feature = "host")]
    Flash {
        image: PathBuf,
        device: PathBuf,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
        /// Skip the read-back verification.
        #[arg(long)]
        no_verify: bool,
        /// bmaptool's block map of the image: only its mapped ranges are
        /// written, each checked against its checksum.
        #[arg(long)]
        bmap: Option<PathBuf>,
    },
    /// Release feeds.
    #[cfg(feature = "host")]
    #[command(subcommand)]
    Feed(FeedCmd),
    /// The cluster's nodes as ferry sees them (through the Kubernetes API).
    #[cfg(feature = "host")]
    #[command(subcommand)]
    Fleet(FleetCmd),
    /// Personalise an image or card before first boot (one, or a CSV batch).
    #[cfg(feature = "host")]
    Provision {
        /// Image file or card to personalise (with --batch: the base image).
        /// With --from-k3os and no image: print the converted node.toml.
        #[arg(long, required_unless_present = "from_k3os")]
        image: Option<PathBuf>,
        /// Node settings (TOML) for one device.
        #[arg(long = "config", conflicts_with_all = ["batch", "from_k3os"])]
        node: Option<PathBuf>,
        /// A k3OS `config.yaml` to convert (what has no ferry equivalent is
        /// listed on stderr).
        #[arg(long, conflicts_with = "batch")]
        from_k3os: Option<PathBuf>,
        /// CSV of devices, one row each (header: hostname,role,server_url,token,labels,...).
        #[arg(long, requires_all = ["template", "out"])]
        batch: Option<PathBuf>,
        #[arg(long)]
        template: Option<PathBuf>,
        #[arg(long)]
        out: Option<PathBuf>,
        /// The partition that receives the files.
        #[arg(long, default_value = "data")]
        data_partition: String,
    },
    /// Commit the trial slot we booted into.
    MarkGood,
    /// Reject the trial slot and reboot into the previous one.
    MarkBad,
    /// Abandon the pending or trial update and go back to the committed slot.
    Rollback,
    /// Rebuild a device record whose both copies are damaged: the booted
    /// slot becomes the committed one, the other is left out of the boot
    /// order until an install rewrites it, and the rollback floor is kept
    /// from the bootloader env (or raised to --floor).
    RecoverState {
        /// A floor to keep at least (e.g. the fleet's current version).
        #[arg(long)]
        floor: Option<semver::Version>,
    },
    /// Run the whole update flow on a disk image in a temp dir (no hardware).
    #[cfg(feature = "host")]
    Demo {
        /// Work directory (must not exist).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Disk images.
    #[cfg(feature = "host")]
    #[command(subcommand)]
    Image(ImageCmd),
}

#[cfg(feature = "host")]
#[derive(Subcommand, Debug)]
enum KeyCmd {
    /// Create NAME.key (private, 0600) and NAME.pub.
    Generate {
        name: String,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Print a key as PEM: a secret key as PKCS#8, a public key as
    /// SubjectPublicKeyInfo (what OpenSSL, HSM and KMS tools import).
    Export { file: PathBuf },
}

#[derive(Args, Debug, Clone)]
struct TrustArgs {
    /// Trusted public key file (repeatable).
    #[arg(long = "key")]
    keys: Vec<PathBuf>,
    /// Directory of trusted *.pub files (repeatable).
    #[arg(long)]
    keyring: Vec<PathBuf>,
    /// Distinct trusted signatures required.
    #[arg(long, default_value_t = 1)]
    threshold: usize,
}

#[derive(Subcommand, Debug)]
enum BundleCmd {
    /// Build and sign a bundle.
    #[cfg(feature = "host")]
    Create {
        #[arg(long)]
        board: String,
        #[arg(long)]
        version: String,
        #[arg(long)]
        kernel: Option<PathBuf>,
        #[arg(long)]
        rootfs: Option<PathBuf>,
        #[arg(long)]
        k3s: Option<PathBuf>,
        /// Extra payload NAME:TARGET:FILE (repeatable).
        #[arg(long = "payload")]
        extra: Vec<String>,
        /// Secret key (repeatable: several signatures).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        #[arg(long, short)]
        output: PathBuf,
        /// Devices running an older version must not take this bundle.
        #[arg(long)]
        min_installed_version: Option<String>,
        /// Uncompressed bytes per chunk (power of two, 64 KiB..16 MiB).
        #[arg(long, default_value_t = 1 << 20)]
        chunk_size: u32,
        /// zstd level.
        #[arg(long, default_value_t = 9)]
        level: i32,
        /// Creation time (Unix seconds) for reproducible bundles.
        #[arg(long, env = "SOURCE_DATE_EPOCH")]
        created: Option<u64>,
    },
    /// Add a signature to a bundle (threshold signing), or replace them all.
    #[cfg(feature = "host")]
    Sign {
        file: PathBuf,
        /// Secret key file (ferry format, or an Ed25519 PKCS#8 PEM).
        #[arg(
            long,
            required_unless_present = "sign_command",
            conflicts_with = "sign_command"
        )]
        key: Option<PathBuf>,
        /// Sign with an external command instead (HSM, KMS, PKCS#11): it reads
        /// the bytes to sign on stdin and prints the signature (raw or hex).
        #[arg(long, requires = "signer")]
        sign_command: Option<String>,
        /// The public key of the external signer (checked against its signature).
        #[arg(long)]
        signer: Option<PathBuf>,
        /// Drop existing signatures first.
        #[arg(long)]
        replace: bool,
        /// Output (default: rewrite the input).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Sign without asking (required without a terminal).
        #[arg(long)]
        yes: bool,
        /// Skip checking the manifest rules and payload digests before
        /// signing (only for building bad-input test fixtures).
        #[arg(long, hide = true)]
        no_review: bool,
    },
    /// Check signatures and every payload digest; exit 0 only if all hold.
    Verify {
        file: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Show the manifest (unverified).
    Inspect {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[cfg(feature = "host")]
#[derive(Subcommand, Debug)]
enum FleetCmd {
    /// One row per node: version, channel, update phase, last result,
    /// Ready, reboot lock held.
    Status {
        /// kubeconfig of the cluster (any kubectl writes; no exec plugins).
        #[arg(long, env = "KUBECONFIG", default_value = "/etc/rancher/k3s/k3s.yaml")]
        kubeconfig: PathBuf,
        /// Where the reboot Leases live.
        #[arg(long, default_value = "kube-system")]
        namespace: String,
        #[arg(long)]
        json: bool,
    },
}

#[cfg(feature = "host")]
#[derive(Subcommand, Debug)]
enum FeedCmd {
    /// Add a bundle to a channel, raise the serial, re-sign the index.
    Publish {
        #[arg(long)]
        feed: PathBuf,
        #[arg(long)]
        channel: String,
        #[arg(long)]
        bundle: PathBuf,
        /// Secret key (repeatable).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Seconds until devices refuse this index (default 30 days).
        #[arg(long, default_value_t = 30 * 86400)]
        expires_in: u64,
        /// Publication time (Unix seconds), default now.
        #[arg(long)]
        now: Option<u64>,
        /// Keys the bundle must be signed by (default: the public halves of
        /// the feed's own keys); the bundle is verified in full first.
        #[arg(long = "trust")]
        trust: Vec<PathBuf>,
        /// Directory of trusted *.pub files for the bundle (repeatable).
        #[arg(long)]
        keyring: Vec<PathBuf>,
        /// Distinct trusted bundle signatures required.
        #[arg(long, default_value_t = 1)]
        threshold: usize,
    },
}

#[cfg(feature = "host")]
#[derive(Subcommand, Debug)]
enum ImageCmd {
    /// Build a bootable disk image with slot A installed from a bundle.
    Build {
        #[arg(long)]
        board: String,
        #[arg(long)]
        bundle: PathBuf,
        #[arg(long, short)]
        output: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
        /// Also write the initial device record into this directory.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Copy FILE onto the boot partition (as NAME, default its file
        /// name): firmware and the bootloader a board's ROM loads (the Pi's
        /// start4.elf, u-boot.bin, device trees). Repeatable.
        #[arg(long = "boot-file", value_name = "FILE[:NAME]")]
        boot_files: Vec<String>,
    },
}

/// Parse `args` and run. Returns the exit code on success.
pub fn run<I: IntoIterator<Item = OsString>>(args: I) -> Result<u8, Error> {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return Ok(code);
        }
    };
    let quiet = cli.quiet;
    match cli.cmd {
        #[cfg(feature = "host")]
        Cmd::Key(KeyCmd::Generate { name, dir }) => key::generate(&name, &dir).map(|_| 0),
        #[cfg(feature = "host")]
        Cmd::Key(KeyCmd::Export { file }) => key::export(&file).map(|_| 0),
        #[cfg(feature = "host")]
        Cmd::Bundle(BundleCmd::Create {
            board,
            version,
            kernel,
            rootfs,
            k3s,
            extra,
            keys,
            output,
            min_installed_version,
            chunk_size,
            level,
            created,
        }) => {
            use crate::bundle::writer::Input;
            let mut payloads = Vec::new();
            for (name, f) in [("kernel", kernel), ("rootfs", rootfs), ("k3s", k3s)] {
                if let Some(path) = f {
                    payloads.push(Input {
                        name: name.into(),
                        target: name.into(),
                        path,
                    });
                }
            }
            for e in extra {
                let mut it = e.splitn(3, ':');
                match (it.next(), it.next(), it.next()) {
                    (Some(n), Some(t), Some(p)) => payloads.push(Input {
                        name: n.into(),
                        target: t.into(),
                        path: p.into(),
                    }),
                    _ => {
                        return Err(Error::Usage(format!(
                            "--payload {e:?}: expected NAME:TARGET:FILE"
                        )))
                    }
                }
            }
            if payloads.is_empty() {
                return Err(Error::Usage(
                    "no payloads: give --kernel, --rootfs, --k3s or --payload".into(),
                ));
            }
            bundle::create(
                bundle::CreateArgs {
                    board,
                    version,
                    min_installed: min_installed_version,
                    payloads,
                    keys,
                    output,
                    chunk_size,
                    level,
                    created,
                },
                quiet,
            )
            .map(|_| 0)
        }
        #[cfg(feature = "host")]
        Cmd::Bundle(BundleCmd::Sign {
            file,
            key,
            replace,
            output,
            yes,
            no_review,
            sign_command,
            signer,
        }) => {
            let mut sign: Box<crate::bundle::keys::SignFn<'static>> =
                match (key, sign_command, signer) {
                    (Some(k), _, _) => {
                        let k = crate::io::keyfiles::read_secret(&k)?;
                        Box::new(move |ctx, doc| Ok(k.sign(ctx, doc)))
                    }
                    (None, Some(cmd), Some(p)) => {
                        let p = crate::io::keyfiles::read_public(&p)?;
                        Box::new(crate::io::keyfiles::command_signer(cmd, p))
                    }
                    _ => {
                        return Err(Error::Usage(
                            "give --key, or --sign-command with --signer".into(),
                        ))
                    }
                };
            if !no_review {
                bundle::review_for_signing(&file, yes)?;
            }
            let out = output.unwrap_or_else(|| file.clone());
            let n = crate::bundle::writer::sign(&file, &mut *sign, replace, &out)?;
            println!("{}: {n} signature(s)", out.display());
            Ok(0)
        }
        Cmd::Bundle(BundleCmd::Verify { file, trust }) => {
            bundle::verify(&file, &trust.keys, &trust.keyring, trust.threshold, quiet).map(|_| 0)
        }
        Cmd::Bundle(BundleCmd::Inspect { file, json }) => bundle::inspect(&file, json).map(|_| 0),
        Cmd::Status { json } => slots::status(&cli.config, json).map(|_| 0),
        Cmd::Install { file, no_reboot } => {
            slots::install(&cli.config, &file, no_reboot, quiet).map(|_| 0)
        }
        Cmd::Check => slots::check(&cli.config).map(|_| 0),
        Cmd::Firstboot {
            provision,
            root,
            set_hostname,
        } => {
            let a = crate::io::firstboot::apply(&provision, &root, set_hostname)?;
            println!(
                "firstboot: hostname {}; {} file(s) written{}{}",
                a.hostname.as_deref().unwrap_or("(unchanged)"),
                a.written.len(),
                if a.written.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", a.written.join(", "))
                },
                if a.unchanged.is_empty() {
                    String::new()
                } else {
                    format!("; {} unchanged", a.unchanged.len())
                }
            );
            Ok(0)
        }
        Cmd::GrowData { mount, table_only } => {
            let cfg = crate::io::config::Config::load(&cli.config)?;
            let (board, _) = crate::io::boardfile::load(&cfg.board)?;
            let g =
                crate::io::grow::grow(&cfg.disk, &board, (!table_only).then_some(mount.as_path()))?;
            let mib = |b: u64| b >> 20;
            println!(
                "grow-data: partition {} is {} MiB{}{}",
                g.partition,
                mib(g.bytes),
                if g.table { " (table rewritten)" } else { "" },
                match g.fs {
                    Some((a, b)) =>
                        format!("; file system grown from {} to {} MiB", mib(a), mib(b)),
                    None if table_only => String::new(),
                    None => "; file system already fills it".into(),
                }
            );
            Ok(0)
        }
        Cmd::Daemon { once } => {
            let cfg = crate::io::config::Config::load(&cli.config)?;
            crate::daemon::run(cfg, crate::daemon::Options { once }).map(|_| 0)
        }
        #[cfg(feature = "host")]
        Cmd::Flash {
            image,
            device,
            yes,
            no_verify,
            bmap,
        } => image::flash(&image, &device, bmap.as_deref(), yes, !no_verify, quiet).map(|_| 0),
        #[cfg(feature = "host")]
        Cmd::Provision {
            image,
            from_k3os: Some(k3os),
            data_partition,
            ..
        } => image::from_k3os(&k3os, image.as_deref(), &data_partition).map(|_| 0),
        #[cfg(feature = "host")]
        Cmd::Provision {
            image,
            node,
            batch,
            template,
            out,
            data_partition,
            from_k3os: None,
        } => image::provision(
            image.as_deref().unwrap_or(std::path::Path::new("")),
            node.as_deref(),
            batch.as_deref(),
            template.as_deref(),
            out.as_deref(),
            &data_partition,
        )
        .map(|_| 0),
        Cmd::Ctl { cmd, url } => slots::ctl(&cli.config, &cmd, url).map(|_| 0),
        #[cfg(feature = "host")]
        Cmd::Fleet(FleetCmd::Status {
            kubeconfig,
            namespace,
            json,
        }) => {
            let kc = crate::kube::kubeconfig::load(&kubeconfig)?;
            let kube = crate::kube::Kube::new(&kc)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::io("start runtime", "tokio", e))?;
            let rows = rt.block_on(crate::kube::fleet::status(&kube, &namespace))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows)
                        .map_err(|e| Error::Internal(e.to_string()))?
                );
            } else {
                print!("{}", crate::kube::fleet::table(&rows));
            }
            Ok(0)
        }
        #[cfg(feature = "host")]
        Cmd::Feed(FeedCmd::Publish {
            feed,
            channel,
            bundle,
            keys,
            expires_in,
            now,
            trust,
            keyring,
            threshold,
        }) => {
            let keys = keys
                .iter()
                .map(|k| crate::io::keyfiles::read_secret(k))
                .collect::<Result<Vec<_>, _>>()?;
            // a feed lists only a bundle that verifies in full
            let ring = if trust.is_empty() && keyring.is_empty() {
                crate::bundle::Keyring::new(keys.iter().map(|k| k.public()).collect(), threshold)
            } else {
                crate::io::keyfiles::load_keyring(&trust, &keyring, threshold)?
            };
            bundle::verify_for_publish(&bundle, &ring)?;
            let now = now.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            });
            let idx = crate::feed::publish::publish(crate::feed::publish::Publish {
                feed: &feed,
                channel: &channel,
                bundle: &bundle,
                keys: &keys,
                now,
                expires_in,
            })?;
            println!(
                "{}/{}/index.json: serial {}, {} releases, expires {}",
                feed.display(),
                channel,
                idx.serial,
                idx.releases.len(),
                idx.expires
            );
            Ok(0)
        }
        Cmd::MarkGood => {
            slots::event(&cli.config, crate::update::machine::Event::MarkGood).map(|_| 0)
        }
        Cmd::MarkBad => {
            slots::event(&cli.config, crate::update::machine::Event::MarkBad).map(|_| 0)
        }
        Cmd::Rollback => {
            slots::event(&cli.config, crate::update::machine::Event::Rollback).map(|_| 0)
        }
        Cmd::RecoverState { floor } => slots::recover(&cli.config, floor).map(|_| 0),
        #[cfg(feature = "host")]
        Cmd::Demo { dir } => demo::run(dir).map(|_| 0),
        #[cfg(feature = "host")]
        Cmd::Image(ImageCmd::Build {
            board,
            bundle,
            output,
            trust,
            state_dir,
            boot_files,
        }) => image::build(
            &board,
            &bundle,
            &output,
            &trust.keys,
            &trust.keyring,
            trust.threshold,
            state_dir.as_deref(),
            &boot_files,
            quiet,
        )
        .map(|_| 0),
    }
}
