//! The `rack` binary: parses flags and calls into the library.

use std::io::Read;
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
            println!("rack {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Cmd::Server(a) => {
            let settings = Settings::resolve(Overrides {
                listen: a.listen,
                http: a.http,
                domain: a.domain,
                provider: a.provider,
                rack: a.rack_name,
                trusted_proxy: a.trusted_proxy,
                docker: a.docker,
                test_pause_at: a.test_pause_at,
                ..base
            })?;
            tokio::runtime::Runtime::new()?.block_on(serve(settings))
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

/// How long the router may hold new connections at start-up while the
/// routes of running apps come back.
const ROUTES_HOLD: std::time::Duration = std::time::Duration::from_secs(2);

async fn serve(settings: Settings) -> Result<()> {
    rack::git::init_process();
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("binding SSH on {}", settings.listen))?;
    let http = tokio::net::TcpListener::bind(&settings.http)
        .await
        .with_context(|| format!("binding the app router on {}", settings.http))?;
    let rack = rack::state::Rack::open(settings).await?;
    let firewall = rack.provider.guard_host(http.local_addr()?.port())?;
    if firewall.is_some() {
        tracing::info!("host firewall installed");
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    tracing::info!(addr = %http.local_addr()?, "http listening");
    // Routes for the apps that were serving come back before new sessions,
    // and before the router accepts (for at most ROUTES_HOLD): meanwhile a
    // request waits in the listen backlog rather than getting a 404.
    let router = {
        let recovery = rack.deployer.recover();
        tokio::pin!(recovery);
        let early = tokio::time::timeout(ROUTES_HOLD, &mut recovery).await;
        let router = tokio::spawn(rack::router::serve(
            http,
            // An aws rack routes nothing itself: its router answers 404.
            rack.provider.router.clone().unwrap_or_default(),
            rack.settings.trusted_proxy.clone(),
            rx.clone(),
            rack.settings.router_threads,
        ));
        match early {
            Ok(r) => r?,
            Err(_) => {
                tracing::info!("recovery goes on; the router serves what is routed so far");
                recovery.await?
            }
        }
        router
    };
    tracing::info!(addr = %listener.local_addr()?, "ssh listening");
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal received; stopping");
        let _ = tx.send(true);
    });
    let served = rack::server::run(listener, rack, rx).await;
    let routed = match router.await {
        Ok(r) => r,
        Err(e) => Err(anyhow::anyhow!("router task: {e}")),
    };
    if let Some(fw) = firewall {
        if let Err(e) = fw.remove() {
            tracing::warn!(error = %e, "removing the host firewall");
        }
    }
    served?;
    routed
}
