//! `vdev`: list, attach and detach the virtual devices of virtual machines, on any hypervisor
//! vdev has a driver for, chosen by a connection URI.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use serde_json::json;
use vdev::{
    AttachOptions, Attributes, Connection, DetachOptions, DeviceRef, DeviceType, Error, Scope,
    UpdateOptions,
};

mod declarative;
mod output;

use output::{attrs_json, device_json, event_json, event_line, print_json, print_table};

/// Manage the virtual devices (disks, network interfaces, ...) of virtual machines on any
/// hypervisor, through one interface chosen by a connection URI.
#[derive(Parser, Debug)]
#[command(
    name = "vdev",
    version,
    about,
    after_help = "Exit status: 0 success; 1 the operation failed or a value was refused (a malformed NAME=VALUE, TYPE, REF, --timeout or document; the message on stderr starts with error:); 2 the command line could not be parsed; 3 a detach (or an apply) whose removal is pending (asked, the guest has not released the device yet: detach or apply again to wait again).\n\nLogs (stderr, quiet by default): RUST_LOG=debug shows sessions and reconnects; RUST_LOG=vdev_driver_qemu=trace or RUST_LOG=vdev_driver_xen=trace also shows the protocol traffic (QMP, XenStore)."
)]
struct Cli {
    /// Connection URI, e.g. mock:///default, mock:///tmp/host.json, qemu:///run/vms
    #[arg(
        short = 'c',
        long = "connect",
        env = "VDEV_DEFAULT_URI",
        default_value = "mock:///default",
        global = true
    )]
    uri: String,
    /// Open the connection read-only: every change is refused.
    #[arg(long, global = true)]
    readonly: bool,
    /// Print JSON for programs instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// With a +ssh URI that has no persist= option: keep the ssh login open this long after
    /// the command ends, for the next command to the same host (ssh's ControlPersist); 0 turns
    /// it off.
    #[arg(
        long,
        env = "VDEV_SSH_PERSIST",
        default_value = "60s",
        value_name = "DURATION",
        global = true,
        value_parser = humantime::parse_duration
    )]
    ssh_persist: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The drivers this program has, with their URI schemes.
    Drivers,
    /// The domains (virtual machines) of the host: id, name and run state.
    Domains,
    /// The devices of a domain, of one type or of all.
    Devices {
        /// Domain name or id.
        domain: String,
        /// Device type (disk, network, ...).
        #[arg(value_name = "TYPE")]
        device_type: Option<String>,
    },
    /// Create a device from NAME=VALUE attributes; prints its reference.
    Attach {
        /// Domain name or id.
        domain: String,
        /// Device type (disk, network, ...); `vdev schema TYPE` lists its attributes.
        #[arg(value_name = "TYPE")]
        device_type: String,
        /// Attributes, e.g. uname=file:/img/data.img dev=xvdb mode=w (none when the type needs
        /// none: `vdev attach domu1 network`)
        #[arg(value_name = "NAME=VALUE")]
        attributes: Vec<String>,
        /// Attach several devices in one batch, all or none: FILE (`-` for standard input) has
        /// one device per line, a JSON object of its attributes ({"source": "/img/a.qcow2"});
        /// prints their references, one per line.
        #[arg(long, value_name = "FILE", conflicts_with = "attributes")]
        from: Option<String>,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Remove a device; waits until the guest releases it.
    Detach {
        /// Domain name or id.
        domain: String,
        /// Device type.
        #[arg(value_name = "TYPE")]
        device_type: String,
        /// The device's reference, as `vdev devices` lists it.
        #[arg(value_name = "REF")]
        reference: String,
        /// How long to wait for the guest, in seconds, from 0 to 86400 (0: ask and return). When
        /// the guest has not released the device by then, the exit status is 3 and the device
        /// stays listed removal-pending.
        #[arg(long, default_value_t = DetachOptions::DEFAULT_TIMEOUT.as_secs_f64(), value_name = "SECONDS")]
        timeout: f64,
        /// Remove at once, without waiting for the guest.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Change attributes of a device in place (a CD-ROM's medium, a NIC's link); `vdev schema
    /// TYPE` says which attributes can be changed.
    Update {
        /// Domain name or id.
        domain: String,
        /// Device type.
        #[arg(value_name = "TYPE")]
        device_type: String,
        /// The device's reference, as `vdev devices` lists it.
        #[arg(value_name = "REF")]
        reference: String,
        /// The attributes to change, e.g. source=/isos/new.iso or link=down
        #[arg(value_name = "NAME=VALUE", required = true)]
        attributes: Vec<String>,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// The attributes a device type accepts, with their aliases (other names for the same attribute).
    Schema {
        /// Device type.
        #[arg(value_name = "TYPE")]
        device_type: String,
    },
    /// Print device events of a domain as they happen, until interrupted.
    Watch {
        /// Domain name or id.
        domain: String,
    },
    /// The changes that would make domains as a desired-state document (JSON or YAML) says,
    /// one per line: `+` add, `-` remove, `~` update in place, `!` needs a replacement (never
    /// made by apply). Changes nothing.
    Plan {
        /// The document (`-` for standard input); `vdev export DOMAIN` writes one.
        #[arg(value_name = "FILE")]
        file: String,
    },
    /// Make domains as a desired-state document says: removes (waiting as detach does),
    /// updates, then adds each domain's new devices in one batch, all or none.
    Apply {
        /// The document (`-` for standard input).
        #[arg(value_name = "FILE")]
        file: String,
        /// How long each removal waits for the guest, in seconds (0 to 86400); a removal still
        /// pending then gives exit status 3.
        #[arg(long, default_value_t = DetachOptions::DEFAULT_TIMEOUT.as_secs_f64(), value_name = "SECONDS")]
        timeout: f64,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Print a desired-state document (YAML; JSON with --json) of the devices a domain has now.
    Export {
        /// Domain name or id.
        domain: String,
    },
    /// Print the shell completion script for SHELL: `vdev completions bash >
    /// /etc/bash_completion.d/vdev`, or `source <(vdev completions bash)`.
    Completions {
        /// The shell.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `vdev man > /usr/local/share/man/man1/vdev.1`.
    Man,
}

/// Where a change goes, with virsh's flags (each driver says which it supports).
#[derive(Args, Debug, Clone, Copy, Default)]
struct ScopeArgs {
    /// Change the running domain only (gone at its next start).
    #[arg(long)]
    live: bool,
    /// Change the domain's stored configuration (with --live: both).
    #[arg(long)]
    config: bool,
    /// Change both the running domain and its stored configuration.
    #[arg(long, conflicts_with_all = ["live", "config"])]
    persistent: bool,
}

impl ScopeArgs {
    /// The scope asked for; `None`: the driver's default.
    fn scope(self) -> Option<Scope> {
        match (self.live, self.config, self.persistent) {
            (_, _, true) | (true, true, _) => Some(Scope::Both),
            (true, false, false) => Some(Scope::Live),
            (false, true, false) => Some(Scope::Persistent),
            (false, false, false) => None,
        }
    }
}

/// A --timeout in seconds, checked.
fn timeout_arg(seconds: f64) -> vdev::Result<Duration> {
    if !seconds.is_finite() || !(0.0..=86_400.0).contains(&seconds) {
        return Err(Error::InvalidAttribute {
            name: "--timeout".into(),
            reason: format!("{seconds} is not a number of seconds from 0 to 86400"),
        });
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The exit status of a detach whose removal is pending: the request stands, the guest has not
/// released the device yet (1 means the operation failed or a value was refused, 2 that clap could
/// not parse the command line).
const EXIT_REMOVAL_PENDING: u8 = 3;

/// One command is one task: a current-thread runtime runs it on this thread, with no worker
/// threads to start and hand each step to (measured in design 0015, "One-shot commands"). The
/// runtime's drop still waits for its blocking threads: a libvirt call running on one of them
/// must not meet the process's exit (tried: heap corruption in `malloc_consolidate`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Asked, not yet gone: a status of its own, so scripts can tell it from a refusal.
            let status = if matches!(e.condition(), Error::RemovalPending { .. }) {
                EXIT_REMOVAL_PENDING
            } else {
                1
            };
            let mut msg = format!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{msg}");
            ExitCode::from(status)
        }
    }
}

async fn connect(cli: &Cli) -> vdev::Result<Connection> {
    let mut uri = vdev::ConnectUri::parse(&cli.uri)?;
    if cli.readonly {
        uri.set_read_only(true);
    }
    // One command, one call at a time on a current-thread runtime (see `main`): a driver may
    // make its blocking calls on this thread. Not `watch`: it waits for Ctrl-C beside the
    // driver's own tasks (events, reconnecting), which must not hold this thread.
    uri.set_single_caller(!matches!(cli.command, Command::Watch { .. }));
    // A one-shot command keeps its ssh login for the next one (library users choose for
    // themselves: they get no default).
    if uri.transport() == Some("ssh")
        && uri.option("persist").is_none()
        && !cli.ssh_persist.is_zero()
    {
        uri.set_option("persist", &format!("{}s", cli.ssh_persist.as_secs().max(1)));
    }
    Connection::open(uri).await
}

async fn run(cli: Cli) -> vdev::Result<()> {
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut text = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "vdev", &mut text);
            // A reader that stops early (`| head`) is no error.
            let _ = std::io::stdout().write_all(&text);
            return Ok(());
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut text = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut text)
                .expect("rendering into memory");
            let _ = std::io::stdout().write_all(&text);
            return Ok(());
        }
        _ => {}
    }
    if let Command::Drivers = cli.command {
        let drivers = vdev::drivers();
        if cli.json {
            print_json(&json!(drivers
                .iter()
                .map(|d| json!({"name": d.name, "schemes": d.schemes}))
                .collect::<Vec<_>>()));
        } else {
            let rows = drivers
                .iter()
                .map(|d| {
                    vec![
                        d.name.to_owned(),
                        d.schemes.join(", "),
                        d.description.to_owned(),
                    ]
                })
                .collect();
            print_table(&["DRIVER", "SCHEMES", "DESCRIPTION"], rows);
        }
        return Ok(());
    }
    let conn = connect(&cli).await?;
    let result = command(&cli, &conn).await;
    let closed = conn.close().await;
    result.and(closed)
}

async fn command(cli: &Cli, conn: &Connection) -> vdev::Result<()> {
    match &cli.command {
        Command::Drivers | Command::Completions { .. } | Command::Man => {
            unreachable!("handled without a connection")
        }
        Command::Domains => {
            let domains = conn.domains().await?;
            if cli.json {
                // {"id", "name", "state"}, and "uuid" where the hypervisor has one.
                print_json(&json!(domains));
            } else {
                print_table(
                    &["ID", "NAME", "STATE"],
                    domains
                        .iter()
                        .map(|d| {
                            let id = d.id.map_or_else(|| "-".to_owned(), |i| i.to_string());
                            vec![id, d.name.clone(), d.state.to_string()]
                        })
                        .collect(),
                );
            }
        }
        Command::Devices {
            domain,
            device_type,
        } => {
            let d = conn.resolve_domain(domain).await?;
            let t = device_type
                .as_deref()
                .map(str::parse::<DeviceType>)
                .transpose()?;
            let devices = conn.devices(&d, t.as_ref()).await?;
            if cli.json {
                print_json(&json!(devices
                    .iter()
                    .map(|dev| device_json(&d.name, dev))
                    .collect::<Vec<_>>()));
            } else {
                let rows = devices
                    .iter()
                    .map(|dev| {
                        let attrs = dev
                            .attributes
                            .iter()
                            .map(|(n, v)| format!("{n}={v}"))
                            .collect::<Vec<_>>()
                            .join(" ");
                        vec![
                            dev.device_type.to_string(),
                            dev.reference.to_string(),
                            dev.state.to_string(),
                            attrs,
                        ]
                    })
                    .collect();
                print_table(&["TYPE", "REF", "STATE", "ATTRIBUTES"], rows);
            }
        }
        Command::Attach {
            domain,
            device_type,
            attributes,
            from: Some(file),
            scope,
        } => {
            let t: DeviceType = device_type.parse()?;
            let batch = declarative::read_batch(file, &t)?;
            let d = conn.resolve_domain(domain).await?;
            let options = AttachOptions {
                scope: scope.scope(),
            };
            let refs = conn.attach_batch(&d, &batch, &options).await?;
            let _ = attributes;
            if cli.json {
                print_json(&json!(refs
                    .iter()
                    .map(|r| json!({"ref": r.as_str()}))
                    .collect::<Vec<_>>()));
            } else {
                for r in refs {
                    println!("{r}");
                }
            }
        }
        Command::Attach {
            domain,
            device_type,
            attributes,
            from: None,
            scope,
        } => {
            let t: DeviceType = device_type.parse()?;
            let attrs = Attributes::parse_assignments(attributes.iter().map(String::as_str))?;
            let d = conn.resolve_domain(domain).await?;
            let options = AttachOptions {
                scope: scope.scope(),
            };
            let r = conn.attach_with(&d, &t, &attrs, &options).await?;
            if cli.json {
                print_json(&json!({"ref": r.as_str()}));
            } else {
                println!("{r}");
            }
        }
        Command::Detach {
            domain,
            device_type,
            reference,
            timeout,
            force,
            scope,
        } => {
            let t: DeviceType = device_type.parse()?;
            let r: DeviceRef = reference.parse()?;
            let options = DetachOptions {
                timeout: timeout_arg(*timeout)?,
                force: *force,
                scope: scope.scope(),
            };
            let d = conn.resolve_domain(domain).await?;
            let progress =
                (!force && *timeout > 0.0 && std::io::stderr().is_terminal()).then(|| {
                    let p = indicatif::ProgressBar::new_spinner();
                    if let Ok(style) = indicatif::ProgressStyle::with_template(
                        "{spinner} {msg} ({elapsed}, at most {len}s)",
                    ) {
                        p.set_style(style);
                    }
                    p.set_length(timeout.ceil() as u64);
                    p.set_message(format!("waiting for {} to release {t} {r}", d.name));
                    p.enable_steady_tick(Duration::from_millis(120));
                    p
                });
            let result = conn.detach(&d, &t, &r, &options).await;
            if let Some(p) = progress {
                p.finish_and_clear();
            }
            result?;
            if cli.json {
                print_json(&json!({"ref": r.as_str(), "removed": true}));
            }
        }
        Command::Update {
            domain,
            device_type,
            reference,
            attributes,
            scope,
        } => {
            let t: DeviceType = device_type.parse()?;
            let r: DeviceRef = reference.parse()?;
            let attrs = Attributes::parse_assignments(attributes.iter().map(String::as_str))?;
            let d = conn.resolve_domain(domain).await?;
            let options = UpdateOptions {
                scope: scope.scope(),
            };
            conn.update_with(&d, &t, &r, &attrs, &options).await?;
            if cli.json {
                print_json(&json!({"ref": r.as_str(), "updated": attrs_json(&attrs)}));
            }
        }
        Command::Schema { device_type } => {
            let t: DeviceType = device_type.parse()?;
            let schema = conn.schema(&t).await?;
            if cli.json {
                print_json(&json!({
                    "type": schema.device_type.as_str(),
                    "description": schema.description,
                    "attributes": schema.attributes.iter().map(|a| json!({"name": a.name, "aliases": a.aliases, "required": a.required, "updatable": a.updatable, "description": a.description, "example": a.example})).collect::<Vec<_>>(),
                    "passthrough_prefixes": schema.passthrough_prefixes,
                }));
            } else {
                println!("{}: {}", schema.device_type, schema.description);
                let rows = schema
                    .attributes
                    .iter()
                    .map(|a| {
                        vec![
                            if a.aliases.is_empty() {
                                a.name.clone()
                            } else {
                                format!("{} (or {})", a.name, a.aliases.join(" or "))
                            },
                            if a.required { "yes" } else { "no" }.into(),
                            if a.updatable { "yes" } else { "no" }.into(),
                            a.example.clone(),
                            a.description.clone(),
                        ]
                    })
                    .collect();
                print_table(
                    &["ATTRIBUTE", "REQUIRED", "UPDATABLE", "EXAMPLE", "MEANING"],
                    rows,
                );
                for p in &schema.passthrough_prefixes {
                    println!("{p}NAME=VALUE is passed to the hypervisor as it is");
                }
            }
        }
        Command::Plan { file } => declarative::plan(cli.json, conn, file).await?,
        Command::Apply {
            file,
            timeout,
            scope,
        } => {
            let options = vdev::ApplyOptions {
                timeout: timeout_arg(*timeout)?,
                scope: scope.scope(),
            };
            declarative::apply(cli.json, conn, file, &options).await?
        }
        Command::Export { domain } => declarative::export(cli.json, conn, domain).await?,
        Command::Watch { domain } => {
            let d = conn.resolve_domain(domain).await?;
            let mut events = conn.watch(&d).await?;
            eprintln!(
                "watching {} for device events; press Ctrl-C to stop",
                d.name
            );
            let ctrl_c = tokio::signal::ctrl_c();
            tokio::pin!(ctrl_c);
            loop {
                tokio::select! {
                    _ = &mut ctrl_c => break,
                    ev = events.next() => match ev {
                        None => break,
                        Some(Err(e)) => eprintln!("warning: {e}"),
                        Some(Ok(ev)) => {
                            if cli.json {
                                print_json(&event_json(&ev));
                            } else {
                                println!("{}", event_line(&ev));
                            }
                            let _ = std::io::stdout().flush();
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
