//! The `rack` binary: parses flags and calls into the library.

use std::io::{IsTerminal, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use rack::config::{Overrides, Settings};

#[derive(Parser)]
#[command(
    name = "rack",
    version,
    about = "git push to deploy: a self-hosted Heroku-style server",
    allow_external_subcommands = true,
    disable_help_subcommand = true,
    after_help = "Any server command works too, from an app's checkout: rack help lists them."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(flatten)]
    target: rack::client::Target,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args)]
struct Global {
    /// Where the rack keeps its state.
    #[arg(long, env = "RACK_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Log format of the server's own logs (stderr).
    #[arg(long, env = "RACK_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text", global = true)]
    log_format: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the rack: SSH git receiver and command server.
    Server(ServerArgs),
    /// Offline key administration (works whether or not the server runs);
    /// without a subcommand, the server's `keys` list.
    Keys {
        #[command(subcommand)]
        command: Option<KeysCmd>,
    },
    /// Print the server's known_hosts line.
    HostKey {
        /// Host name or pattern to put in the line.
        #[arg(long, default_value = "*")]
        host: String,
    },
    /// Create or update the rack's cloud infrastructure (CloudFormation).
    Install(InstallArgs),
    /// Delete the rack's cloud infrastructure and its bucket.
    Uninstall(InstallArgs),
    /// Local: hand the running server over to a new binary with no
    /// connection dropped. aws: apply this binary's templates to the
    /// rack's stack, then to each app's stack.
    Update(UpdateArgs),
    /// Write a backup of the rack's state to stdout (or --output) as a
    /// tar stream; safe while the server runs.
    Backup {
        /// Put the master key in the backup too (else keep it apart: restore
        /// needs it).
        #[arg(long)]
        include_master_key: bool,
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Restore a backup from stdin (or --input) into an empty data dir.
    Restore {
        /// The master key file, when the backup does not include it.
        #[arg(long)]
        master_key: Option<PathBuf>,
        /// Read from this file instead of stdin.
        #[arg(long, short)]
        input: Option<PathBuf>,
    },
    /// Print the version.
    Version,
    /// Add the rack as a git remote of this checkout (pinning its host key).
    Remote {
        #[command(subcommand)]
        command: rack::client::RemoteCmd,
    },
    /// Print a shell completion script: bash or zsh.
    Completions(rack::client::CompletionsArgs),
    /// List the local and the server commands.
    Help,
    /// A server command, sent over ssh to the rack of this checkout's git
    /// remote (rack help lists them).
    #[command(external_subcommand)]
    Client(Vec<String>),
}

#[derive(Args)]
struct InstallArgs {
    /// The provider: aws.
    provider: String,
    /// The rack's name (its stack is rack-NAME).
    #[arg(long = "rack", env = "RACK_NAME")]
    rack: String,
    /// Existing VPC to use (install; default: a new one).
    #[arg(long)]
    vpc: Option<String>,
    /// Subnets in that VPC (install).
    #[arg(long = "subnet")]
    subnets: Vec<String>,
}

#[derive(Args)]
struct UpdateArgs {
    /// The new binary (local provider; default: this one).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// aws: show the change sets of the rack's and the apps' stacks, and
    /// change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct ServerArgs {
    /// SSH listen address.
    #[arg(long, env = "RACK_LISTEN")]
    listen: Option<String>,
    /// App router listen address.
    #[arg(long, env = "RACK_HTTP")]
    http: Option<String>,
    /// Apps are served as APP.DOMAIN.
    #[arg(long, env = "RACK_DOMAIN")]
    domain: Option<String>,
    /// local or aws.
    #[arg(long, env = "RACK_PROVIDER")]
    provider: Option<String>,
    /// Rack name (aws provider).
    #[arg(long = "rack", env = "RACK_NAME")]
    rack_name: Option<String>,
    /// Keep X-Forwarded-* headers from this CIDR.
    #[arg(long, env = "RACK_TRUSTED_PROXY")]
    trusted_proxy: Option<String>,
    /// Docker engine URI.
    #[arg(long, env = "DOCKER_HOST")]
    docker: Option<String>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9190).
    #[arg(long, env = "RACK_METRICS")]
    metrics: Option<String>,
    /// Test-only: pause rollouts at POINT[:vN] (see src/testhook.rs).
    #[arg(long, hide = true)]
    test_pause_at: Option<String>,
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Add a key read from stdin.
    Add {
        name: String,
        #[arg(long, conflicts_with = "app", required_unless_present = "app")]
        admin: bool,
        #[arg(long)]
        app: Vec<String>,
    },
    /// List keys.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a key (never the last admin key).
    Remove { name: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,russh=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(cli: Cli) -> Result<()> {
    let base = Overrides {
        data_dir: cli.global.data_dir,
        ..Default::default()
    };
    match cli.command {
        Cmd::Client(words) => std::process::exit(rack::client::server_command(&cli.target, words)),
        Cmd::Keys { command: None } => std::process::exit(rack::client::server_command(
            &cli.target,
            vec!["keys".into()],
        )),
        Cmd::Remote { command } => rack::client::remote(&cli.target, command),
        Cmd::Completions(a) => {
            let local: Vec<String> = Cli::command()
                .get_subcommands()
                .map(|c| c.get_name().to_string())
                .collect();
            rack::client::completions(&a, &local)
        }
        Cmd::Help => {
            print!("{}", Cli::command().render_help());
            print!("{}", rack::client::server_help());
            Ok(())
        }
        Cmd::Version => {
            println!("{}", rack::version());
            Ok(())
        }
        Cmd::Backup {
            include_master_key,
            output,
        } => backup(base, include_master_key, output),
        Cmd::Restore { master_key, input } => restore(base, master_key, input),
        Cmd::Update(a) => update(base, a),
        Cmd::Server(a) => {
            let settings = Settings::resolve(Overrides {
                listen: a.listen,
                http: a.http,
                domain: a.domain,
                provider: a.provider,
                rack: a.rack_name,
                trusted_proxy: a.trusted_proxy,
                docker: a.docker,
                metrics: a.metrics,
                test_pause_at: a.test_pause_at,
                ..base
            })?;
            let origin = rack::handover::Origin::current();
            tokio::runtime::Runtime::new()?.block_on(rack::daemon::serve(settings, origin))
        }
        Cmd::Install(a) => runtime()?.block_on(install(base, a, true)),
        Cmd::Uninstall(a) => runtime()?.block_on(install(base, a, false)),
        Cmd::HostKey { host } => {
            let settings = Settings::resolve(base)?;
            let key = runtime()?.block_on(rack::provider::host_key(&settings))?;
            println!(
                "{}",
                rack::ssh::hostkey::known_hosts_line(&key, &host, settings.ssh_port())?
            );
            Ok(())
        }
        Cmd::Keys {
            command: Some(command),
        } => {
            let settings = Settings::resolve(base)?;
            settings.ensure_dirs()?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(async move {
                    let store = rack::provider::keys_store(&settings).await?;
                    keys_command(store.as_ref(), command).await
                })
        }
    }
}

/// `rack backup`.
fn backup(base: Overrides, include_master_key: bool, output: Option<PathBuf>) -> Result<()> {
    let settings = Settings::resolve(base)?;
    match output {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            let r = rack::provider::backup(
                &settings,
                include_master_key,
                std::io::BufWriter::new(file),
            );
            if r.is_err() {
                // No half a backup under a name that looks whole.
                let _ = std::fs::remove_file(&path);
            }
            r
        }
        None => {
            if std::io::stdout().is_terminal() {
                anyhow::bail!(
                    "the backup is a tar stream: redirect stdout to a file, or pass --output FILE"
                );
            }
            rack::provider::backup(&settings, include_master_key, std::io::stdout().lock())
        }
    }
}

/// `rack restore`.
fn restore(base: Overrides, master_key: Option<PathBuf>, input: Option<PathBuf>) -> Result<()> {
    let settings = Settings::resolve(base)?;
    let reader: Box<dyn std::io::Read> = match input {
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let r = runtime()?.block_on(rack::backup::restore::restore(
        &settings,
        reader,
        master_key.as_deref(),
    ))?;
    println!(
        "Restored {} app(s) into {}",
        r.apps,
        settings.data_dir.display()
    );
    if let Some(e) = r.engine_error {
        println!("Could not ask the Docker engine which images are there: {e}");
    }
    for m in &r.missing_images {
        println!("Missing image: {m}: after `rack server` starts, rebuild it with apps:deploy APP (or push again)");
    }
    Ok(())
}

/// `rack update`: the server process (local) or the stacks (aws).
fn update(base: Overrides, a: UpdateArgs) -> Result<()> {
    let settings = Settings::resolve(base)?;
    let binary = match a.binary {
        Some(b) => b,
        None => std::env::current_exe()?,
    };
    let line = runtime()?.block_on(rack::provider::update(&settings, binary, a.dry_run))?;
    println!("{line}");
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// `rack install PROVIDER` / `rack uninstall PROVIDER`.
async fn install(base: Overrides, a: InstallArgs, install: bool) -> Result<()> {
    let req = rack::provider::Install {
        provider: a.provider,
        rack: a.rack,
        data_dir: base.data_dir.unwrap_or_else(rack::config::default_data_dir),
        vpc: a.vpc,
        subnets: a.subnets,
    };
    rack::provider::install(req, install).await
}

/// `rack keys ...` against the rack's store.
async fn keys_command(store: &dyn rack::store::Store, command: KeysCmd) -> Result<()> {
    match command {
        KeysCmd::Add { name, admin, app } => {
            let mut text = String::new();
            std::io::stdin()
                .take(64 * 1024)
                .read_to_string(&mut text)
                .context("reading the public key from stdin")?;
            let mut args: Vec<String> = app
                .iter()
                .flat_map(|a| ["--app".to_string(), a.clone()])
                .collect();
            if admin {
                args.push("--admin".into());
            }
            let (admin, apps) = rack::cmd::keys::parse_scope(args)?;
            let rec = rack::cmd::keys::register(store, &name, admin, &apps, &text).await?;
            store
                .add_event("(local)", None, &format!("keys:add {name}"), "ok")
                .await?;
            println!("Added key {} ({})", rec.name, rec.fingerprint);
        }
        KeysCmd::List { json } => {
            let out = rack::cmd::keys::list_output(&store.list_keys().await?);
            if json {
                println!("{}", serde_json::to_string_pretty(&out.json)?);
            } else {
                println!("{}", out.text);
            }
        }
        KeysCmd::Remove { name } => {
            store.remove_key(&name).await?;
            store
                .add_event("(local)", None, &format!("keys:remove {name}"), "ok")
                .await?;
            println!("Removed key {name}");
        }
    }
    Ok(())
}
