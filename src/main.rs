//! `gracchus`: start a broker with Kafka-style configuration (see `config.rs`).
//!
//! ```text
//! gracchus [--config FILE] [--override key=value]...          run a node
//! gracchus random-uuid                                          print a new cluster id
//! gracchus format -t ID [--config FILE] [--override k=v]... [-g|--ignore-formatted]
//! ```
//! `format` is `kafka-storage format`: it writes `meta.properties` into `log.dirs`.
//!
//! The same binary is also the command-line tools of `gracchus::cli`: invoked under a
//! tool's name (a symlink such as `kafka-topics.sh`) or as `gracchus <tool> ...`:
//! ```text
//! gracchus healthcheck [--bootstrap-server HOST:PORT] [--timeout-ms N] [--config F]...
//! kafka-topics | kafka-console-producer | kafka-console-consumer [.sh] (Kafka's flags)
//! ```

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gracchus::broker::Broker;
use gracchus::cli;
use gracchus::config::{BrokerConfig, dynamic_broker};
use gracchus::controller::controlled_shutdown::{
    CONTROLLED_SHUTDOWN_TIMEOUT, FENCE_TIME_MIN, fence_stopped, move_leaderships,
};
use gracchus::meta_properties::{self, FormatOutcome};
use gracchus::replica::{CleanerSettings, LogCleaner, Partition};
use gracchus::server::{self, Shutdown};
use gracchus::topic_config::DynamicLayers;
use gracchus::types::now_ms;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

fn main() -> anyhow::Result<()> {
    let mut argv = std::env::args();
    let argv0 = argv.next().unwrap_or_default();
    let mut args: Vec<String> = argv.collect();
    // Before anything a broker does: a tool starts no threads, logging or re-execution.
    if let Some(tool) = cli::tool_named(cli::program_name(&argv0)) {
        std::process::exit(cli::run(tool, &args));
    }
    if let Some(tool) = args.first().and_then(|name| cli::tool_named(name)) {
        std::process::exit(cli::run(tool, &args[1..]));
    }
    let subcommand = match args.first().map(String::as_str) {
        Some("--help" | "-h" | "help") => {
            print!("{USAGE}");
            return Ok(());
        }
        Some("random-uuid") => Some(random_uuid(&args[1..])),
        Some("format") => Some(format_storage(args.split_off(1))),
        _ => None,
    };
    if let Some(outcome) = subcommand {
        // The message alone, as the storage tool prints it, and exit code 1.
        if let Err(error) = outcome {
            eprintln!("Error: {error:#}");
            std::process::exit(1);
        }
        return Ok(());
    }
    // First, before any thread or log line: on success this does not return.
    let reexec = gracchus::allocator::fix_mmap_threshold();
    // The configuration comes first: it names the log filter. Parsing it logs nothing.
    let config = match BrokerConfig::from_args_and_env(args, std::env::vars()) {
        Ok(config) => config,
        Err(error @ gracchus::config::ConfigError::Usage(_)) => {
            // A mistyped command line wants the usage, not a stack trace.
            eprint!("Error: {error}\n\n{USAGE}");
            std::process::exit(1);
        }
        Err(error) => return Err(error.into()),
    };
    // One filter for every layer: the status page's recent errors are what the log says.
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(log_filter(&config)?)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(gracchus::status::gather::RECENT_ERRORS.layer())
        .init();
    if let Err(error) = reexec {
        tracing::warn!(%error, "could not re-execute with a fixed malloc mmap threshold");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(config))
}

/// The log filter: `RUST_LOG` when set and not empty (a one-off override needs no config
/// edit), else `log.filter`. A filter that does not parse stops the start.
/// Installed as the process's reloadable filter, so BROKER_LOGGER configs can change it.
fn log_filter(
    config: &BrokerConfig,
) -> anyhow::Result<
    tracing_subscriber::reload::Layer<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
> {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty());
    let (source, filter) = match from_env {
        Some(value) => ("RUST_LOG", value),
        None => ("log.filter", config.log_filter.clone()),
    };
    gracchus::tracing_levels::global()
        .install(&filter)
        .with_context(|| format!("invalid {source} {filter:?}"))
}

/// `gracchus random-uuid`: a new cluster id, as `kafka-storage random-uuid` prints one.
/// `gracchus --help`.
const USAGE: &str = "\
Usage:
  gracchus [--config FILE] [--override KEY=VALUE]...
      runs a broker (and controller): Kafka's broker configs from a properties FILE,
      then KAFKA_* environment variables (KAFKA_LOG_DIRS -> log.dirs), then overrides;
      with none, one node on 127.0.0.1:9092 with its data under ./data
  gracchus format -t CLUSTER_ID [-g] [--config FILE] [--override KEY=VALUE]...
      writes meta.properties into log.dirs (-g: leave formatted directories alone)
  gracchus random-uuid
      prints a new cluster id
  gracchus kafka-topics | kafka-console-producer | kafka-console-consumer | healthcheck ...
      the tools (also run by these names through a link to the binary)
";

fn random_uuid(rest: &[String]) -> anyhow::Result<()> {
    if let Some(extra) = rest.first() {
        anyhow::bail!("random-uuid takes no arguments (got {extra})");
    }
    println!("{}", meta_properties::random_cluster_id());
    Ok(())
}

/// `gracchus format -t <id> [-g] [--config F] [--override k=v]...`: validates the
/// configuration and writes `meta.properties` into `log.dirs`.
fn format_storage(args: Vec<String>) -> anyhow::Result<()> {
    let mut cluster_id = None;
    let mut ignore_formatted = false;
    let mut config_args = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-t" | "--cluster-id" => {
                let value = args
                    .next()
                    .with_context(|| format!("{arg} needs a cluster id"))?;
                cluster_id = Some(value);
            }
            "-g" | "--ignore-formatted" => ignore_formatted = true,
            _ => config_args.push(arg),
        }
    }
    let cluster_id = cluster_id
        .context("format needs the cluster id: -t <id> (make one with `gracchus random-uuid`)")?;
    let config = BrokerConfig::from_args_and_env(config_args, std::env::vars())?;
    match meta_properties::format(&config, &cluster_id, ignore_formatted)? {
        FormatOutcome::Formatted(dir) => {
            println!("Formatting {} with cluster.id {cluster_id}.", dir.display());
        }
        FormatOutcome::AlreadyFormatted(_) => {
            println!("All of the log directories are already formatted.");
        }
    }
    Ok(())
}

async fn run(config: BrokerConfig) -> anyhow::Result<()> {
    // Installed before the port opens: start-up (log recovery, fsyncs) takes a while after
    // the listener is bound, and a SIGTERM in that window must still mean a clean stop
    // (flush, snapshots, clean-shutdown marker), not the default kill.
    let mut signals = StopSignals::install()?;
    // Every client listener, then the controller one; any that cannot be bound stops the
    // start-up, so a listener that is advertised is always served.
    let mut listeners = Vec::new();
    let mut addresses = Vec::new();
    for endpoint in config.broker_listeners() {
        let address = format!("{}:{}", bind_host(&endpoint.host), endpoint.port);
        let listener = (config.socket_buffers)
            .bind_listener(&address, config.listen_backlog)
            .await
            .with_context(|| format!("bind listener {} {address}", endpoint.name))?;
        addresses.push(format!("{}://{address}", endpoint.name));
        listeners.push(server::BoundListener {
            name: endpoint.name.clone(),
            listener,
        });
    }
    let controller_listener = match &config.controller_listener {
        // Controller RPC only; on a controller-only node it is the one listener.
        Some(endpoint) => {
            let address = format!("{}:{}", bind_host(&endpoint.host), endpoint.port);
            // Kafka's controller listener is served by a SocketServer too: same options.
            let bound = (config.socket_buffers)
                .bind_listener(&address, config.listen_backlog)
                .await
                .with_context(|| format!("bind controller listener {address}"))?;
            addresses.push(format!("{}://{address}", endpoint.name));
            Some(bound)
        }
        None => None,
    };
    let address = addresses.join(",");
    let http_listener = bind_http_listener(&config).await?;
    // Opening waits for the quorum: a SIGTERM meanwhile stops the node (nothing was
    // accepted yet, no partition is open).
    let broker = tokio::select! {
        opened = Broker::open(config, controller_listener) => opened?,
        _ = signals.next() => {
            tracing::info!("stopped before the node joined its cluster");
            return Ok(());
        }
    };
    let shutdown = broker.shutdown_signal();
    tokio::spawn(maintenance(broker.clone(), shutdown.clone()));
    tokio::spawn(group_timers(broker.clone(), shutdown.clone()));
    let cleaner = start_log_cleaner(&broker)?;
    tracing::info!(
        %address,
        node_id = broker.config.node_id,
        cluster_id = %broker.image().cluster_id,
        data = %broker.config.log_dirs.display(),
        "broker started"
    );
    if let Some(listener) = http_listener {
        let routes = gracchus::http::routes::ROUTES;
        tokio::spawn(gracchus::http::serve(
            listener,
            broker.clone(),
            routes,
            shutdown.clone(),
        ));
    }
    let serving = (!listeners.is_empty()).then(|| {
        let signal = broker.serving_signal();
        tokio::spawn(server::serve(listeners, broker.clone(), signal))
    });
    signals.next().await;
    tracing::info!("shutting down");
    let stopping = ControlledShutdown::of(&broker);
    let moved = match &stopping {
        Some(stopping) => tokio::select! {
            moved = stopping.move_leaderships(&broker) => moved,
            _ = signals.next() => {
                tracing::warn!("second stop signal: not waiting for the controlled shutdown");
                false
            }
        },
        None => false,
    };
    broker.stop_serving();
    // Each connection finishes the request in hand (within the listener's drain bound),
    // even after a second signal: a request cut half-applied would race the final flush.
    if let Some(serving) = serving {
        let _ = serving.await;
    }
    if let (Some(stopping), true) = (&stopping, moved) {
        tokio::select! {
            _ = stopping.fence(&broker) => {}
            _ = signals.next() => {
                tracing::warn!("second stop signal: not waiting for the fencing");
            }
        }
    }
    broker.begin_shutdown();
    // Before the final flush: a running pass stops at its next batch, changing nothing.
    tokio::task::block_in_place(|| cleaner.stop());
    tokio::task::block_in_place(|| broker.shut_down_logs());
    broker.controller.shutdown().await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Kafka's controlled shutdown: while the node still serves, its leaderships move to
/// other in-sync replicas; once it answers no client, it fences itself, so clients are
/// redirected at once (`controller/controlled_shutdown.rs` says why in that order). Only
/// a node with the broker role, registered, does it; a failure is logged and the stop
/// goes on.
struct ControlledShutdown {
    node_id: gracchus::types::NodeId,
    epoch: i64,
    started: std::time::Instant,
}

impl ControlledShutdown {
    fn of(broker: &Broker) -> Option<ControlledShutdown> {
        if !broker.config.roles.broker {
            return None;
        }
        let node_id = broker.config.node_id;
        let epoch = broker.image().brokers.get(&node_id)?.epoch;
        Some(ControlledShutdown {
            node_id,
            epoch,
            started: std::time::Instant::now(),
        })
    }

    /// Whether the leaderships moved (so the node may fence itself once it stops serving).
    async fn move_leaderships(&self, broker: &Broker) -> bool {
        let (controller, timeout) = (&broker.controller, CONTROLLED_SHUTDOWN_TIMEOUT);
        match move_leaderships(controller, self.node_id, self.epoch, timeout).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "controlled shutdown incomplete; stopping anyway");
                false
            }
        }
    }

    async fn fence(&self, broker: &Broker) {
        let controller = &broker.controller;
        let left = CONTROLLED_SHUTDOWN_TIMEOUT.saturating_sub(self.started.elapsed());
        let timeout = left.max(FENCE_TIME_MIN);
        match fence_stopped(controller, self.node_id, self.epoch, timeout).await {
            Ok(()) => tracing::info!(
                elapsed_ms = self.started.elapsed().as_millis() as u64,
                "controlled shutdown: leaderships moved, broker fenced"
            ),
            Err(error) => tracing::warn!(%error, "controlled shutdown: fencing failed"),
        }
    }
}

/// The log cleaner's own thread (compaction runs off the async workers), with its settings
/// resolved from the current metadata image at each round (dynamic broker configs).
fn start_log_cleaner(broker: &Arc<Broker>) -> anyhow::Result<LogCleaner> {
    let configured = broker.clone();
    let settings = move || {
        let image = configured.image();
        let dynamic = DynamicLayers::of(&image.broker_configs, configured.config.node_id);
        CleanerSettings {
            backoff_ms: dynamic_broker::cleaner_backoff_ms(&configured.config, dynamic),
            dedupe_buffer_bytes: dynamic_broker::cleaner_dedupe_buffer_bytes(
                &configured.config,
                dynamic,
            ),
        }
    };
    let hosted = broker.clone();
    LogCleaner::start(settings, move || hosted.replicas.all()).context("start the log cleaner")
}

/// `http.listener`, bound with the Kafka listeners so a port in use fails start-up.
async fn bind_http_listener(config: &BrokerConfig) -> anyhow::Result<Option<TcpListener>> {
    let Some(address) = &config.http_listener else {
        return Ok(None);
    };
    let address = format!("{}:{}", bind_host(&address.host), address.port);
    let listener = TcpListener::bind(&address).await.with_context(|| {
        format!("bind http.listener {address} (set http.listener=none to disable)")
    })?;
    tracing::info!(address = %listener.local_addr()?, "serving /metrics over HTTP");
    Ok(Some(listener))
}

fn bind_host(host: &str) -> &str {
    if host.is_empty() { "0.0.0.0" } else { host }
}

/// SIGTERM and SIGINT (ctrl-c), each listened to by one stream for the whole run, so a
/// signal that arrives while no step is waiting for one is kept for the next step.
struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<StopSignals> {
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate()).context("install SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("install SIGINT handler")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

const INITIAL_TASK_DELAY: Duration = Duration::from_secs(30);

/// Retention, time-based flushing and offset expiry, on their configured intervals.
async fn maintenance(broker: Arc<Broker>, mut shutdown: Shutdown) {
    let retention_every = Duration::from_millis(broker.config.retention_check_interval_ms.max(1));
    let flush_every = Duration::from_millis(broker.config.flush_check_interval_ms.max(1));
    // Kafka's LogManager waits 30 s (InitialTaskDelayMs) before its first retention pass,
    // so a restart does not immediately delete what a client is about to read.
    let first_retention = tokio::time::Instant::now() + retention_every.min(INITIAL_TASK_DELAY);
    let mut retention = tokio::time::interval_at(first_retention, retention_every);
    let mut flush = tokio::time::interval(flush_every);
    let offsets_every =
        Duration::from_millis(broker.config.offsets_retention_check_interval_ms.max(1));
    let mut offsets =
        tokio::time::interval_at(tokio::time::Instant::now() + offsets_every, offsets_every);
    let resolve = |group: &str| broker.offsets_partition_for(group);
    loop {
        tokio::select! {
            _ = retention.tick() => off_async_threads(&broker, enforce_retention).await,
            _ = flush.tick() => off_async_threads(&broker, flush_if_due).await,
            _ = offsets.tick() => {
                let expired = broker.groups.expire_offsets(&resolve, now_ms());
                if expired > 0 {
                    tracing::info!(expired, "expired committed offsets");
                }
            }
            _ = shutdown.triggered() => return,
        }
    }
}

/// Runs `work` on every hosted partition on a blocking thread: deleting segment files and
/// fsyncs must not hold up the async workers that serve requests.
async fn off_async_threads(broker: &Arc<Broker>, work: fn(&Partition)) {
    let broker = broker.clone();
    let done = tokio::task::spawn_blocking(move || {
        for partition in broker.replicas.all() {
            work(&partition);
        }
    });
    if let Err(error) = done.await {
        tracing::error!(%error, "a maintenance pass panicked");
    }
}

fn enforce_retention(partition: &Partition) {
    match partition.enforce_retention(now_ms()) {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(tp = %partition.tp, deleted, "retention deleted segments"),
        Err(error) => partition.report_background_failure("retention", &error),
    }
}

fn flush_if_due(partition: &Partition) {
    if let Err(error) = partition.flush_if_due(now_ms()) {
        partition.report_background_failure("flush", &error);
    }
}

/// Drives group deadlines (session expiry, rebalance and join timeouts): sleeps until the
/// earliest one, or until a request sets an earlier one.
async fn group_timers(broker: Arc<Broker>, mut shutdown: Shutdown) {
    const IDLE: Duration = Duration::from_secs(3600);
    let resolve = |group: &str| broker.offsets_partition_for(group);
    loop {
        let next = broker.groups.registry.tick_due(&resolve, now_ms());
        let sleep = next.map_or(IDLE, |at| {
            Duration::from_millis((at - now_ms()).max(0) as u64)
        });
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = broker.groups.registry.deadline_changed() => {}
            _ = shutdown.triggered() => return,
        }
    }
}
