//! The only place that wires modules together: configuration, logging, models, commands.

use std::path::PathBuf;

use anyhow::Context;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cli::{
    BenchTarget, Cli, ClientsAction, Command, EnrollmentsAction, KeysAction, OperatorsAction,
};
use crate::config::{Config, Overrides};
use crate::pipeline::embed::EMBEDDING_DIM;
use crate::pipeline::models::{ModelStore, Precision};
use crate::pipeline::stream::LiveModels;
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::store::Store;
use crate::store::keys::KeySources;
use crate::tools;

pub fn run(cli: Cli) -> anyhow::Result<()> {
    init_logging(i16::from(cli.global.verbose) - i16::from(cli.global.quiet));
    let config = Config::load(&Overrides {
        file: cli.global.config.clone(),
        data_dir: cli.global.data_dir.clone(),
    })?;
    tracing::debug!(data_dir = %config.data_dir.display(), "configuration loaded");
    let mut config = config;
    config.pipeline.threads = model_threads(config.pipeline.threads);
    let config = config;
    let models = || open_models(&config);
    let command = cli.command.unwrap_or(Command::Run {
        listen: None,
        cameras: Vec::new(),
        door: false,
    });
    match command {
        Command::Run {
            listen,
            cameras,
            door,
        } => {
            let mut config = config.clone();
            if !cameras.is_empty() {
                config.cameras = cameras
                    .into_iter()
                    .map(|source| crate::config::CameraConfig {
                        source,
                        id: None,
                        door,
                        clients: Vec::new(),
                    })
                    .collect();
                config.camera_specs()?;
            } else if door {
                anyhow::bail!("--door applies to the cameras given with --camera: none given");
            }
            serve(config, listen, models)
        }
        Command::Cameras { json } => tools::cameras::run(json),
        Command::SyncToken { days, json } => {
            let (token, exp) = match open_store(&config) {
                Ok(store) => sync_state(&config, &store)?
                    .token(days.unwrap_or(config.sync.token_days).max(1))
                    .map_err(|e| anyhow::anyhow!(e.message))?,
                // A running daemon holds the store: ask it over its Unix socket.
                Err(e) if format!("{e:#}").contains("in use by another process") => {
                    match &config.api.unix_socket {
                        Some(sock) => tools::store::sync_token_over_socket(sock)
                            .with_context(|| format!("{e:#}; asking its Unix socket"))?,
                        None => {
                            return Err(
                                e.context("the daemon runs and has no api.unix_socket to ask")
                            );
                        }
                    }
                }
                Err(e) => return Err(e),
            };
            if json {
                println!("{}", crate::api::sync::token_json(&token, exp));
            } else {
                println!("{token}");
            }
            Ok(())
        }
        Command::Detect { image, json } => {
            tools::detect::run(&load_pipeline(&models()?, &config, None)?, &image, json)
        }
        Command::Embed { image, json } => {
            tools::detect::run_embed(&load_pipeline(&models()?, &config, None)?, &image, json)
        }
        Command::Eval {
            dataset,
            precision,
            json,
        } => tools::eval::run(
            &load_pipeline(&models()?, &config, precision)?,
            &dataset,
            json,
        ),
        Command::Enroll {
            user_id,
            client,
            images,
            json,
        } => {
            let pipeline = load_pipeline(&models()?, &config, None)?;
            let db = open_store(&config)?;
            tools::store::enroll(&pipeline, &db, &client, &user_id, &images, json)
        }
        Command::Identify {
            image,
            client,
            json,
        } => {
            let pipeline = load_pipeline(&models()?, &config, None)?;
            let db = open_store(&config)?;
            tools::store::identify(&pipeline, &db, &config.matching, &client, &image, json)
        }
        Command::Clients {
            action:
                ClientsAction::Add {
                    name,
                    payload_encryption,
                    json,
                },
        } => tools::store::add_client(&open_store(&config)?, &name, payload_encryption, json),
        Command::Operators {
            action: OperatorsAction::Set { email, name },
        } => tools::store::set_operator(&open_store(&config)?, &email, &name),
        Command::Liveness { frames, fps, json } => {
            let (pipeline, live) = load_live(&models()?, &config)?;
            tools::liveness::run(
                &pipeline,
                &live,
                &config.liveness,
                &config.obstacles,
                &frames,
                fps,
                json,
            )
        }
        Command::Attack {
            photo,
            clip,
            kind,
            out,
            frames,
            fps,
            seed,
        } => {
            let pipeline = load_pipeline(&models()?, &config, None)?;
            tools::pad_eval::write_attack(
                &pipeline,
                photo.as_deref(),
                clip.as_deref(),
                kind,
                &out,
                frames,
                fps,
                seed,
            )
        }
        Command::PadEval {
            photos,
            clips,
            frames,
            fps,
            seeds,
            first_seed,
            window_frames,
            window_stride,
            session_frames,
            face_widths,
            enlarge,
            json,
            dump,
            from_dump,
        } => {
            let opts = tools::pad_eval::Options {
                photos,
                clips,
                frames,
                fps,
                seeds,
                first_seed,
                window_frames,
                window_stride,
                session_frames,
                face_widths,
                enlarge,
                json,
                dump,
            };
            if let Some(path) = from_dump {
                return tools::pad_eval::rejudge(&config.liveness, &opts, &path);
            }
            let (pipeline, live) = load_live(&models()?, &config)?;
            tools::pad_eval::run(&pipeline, &live, &config.liveness, &opts)
        }
        Command::Keys {
            action:
                KeysAction::Rotate {
                    new_master_key_file,
                    json,
                },
        } => tools::store::rotate_keys(&open_store(&config)?, new_master_key_file.as_deref(), json),
        Command::Enrollments { action } => {
            let db = open_store(&config)?;
            match action {
                EnrollmentsAction::List { client, json } => {
                    tools::store::list(&db, client.as_deref(), json)
                }
                EnrollmentsAction::Delete {
                    enrollment_id,
                    client,
                } => tools::store::delete(&db, &client, &enrollment_id),
            }
        }
        Command::Bench {
            target:
                Some(BenchTarget::Index {
                    n,
                    dim,
                    queries,
                    json,
                }),
            ..
        } => tools::bench_index::run(&tools::bench_index::Options {
            n,
            dim,
            queries,
            search_expansion: config.store.search_expansion,
            json,
        }),
        Command::Bench {
            target:
                Some(BenchTarget::Store {
                    n,
                    dim,
                    batch,
                    queries,
                    json,
                    open_only,
                }),
            ..
        } => {
            let opts = tools::bench_store::Options {
                n,
                dim,
                batch: batch.max(1),
                queries,
                store: config.store.clone(),
                json,
            };
            match open_only {
                Some(dir) => tools::bench_store::open_only(&opts, &dir),
                None => tools::bench_store::run(&opts),
            }
        }
        Command::Bench {
            target: Some(BenchTarget::Liveness { frames, json }),
            ..
        } => {
            let (pipeline, live) = load_live(&models()?, &config)?;
            tools::liveness::bench(
                &pipeline,
                &live,
                &config.liveness,
                &config.obstacles,
                &frames,
                json,
            )
        }
        Command::Bench {
            target:
                Some(BenchTarget::Door {
                    clips,
                    enroll,
                    fps,
                    repeat,
                    json,
                }),
            ..
        } => {
            let engine = engine(&models()?, &config)?;
            tools::bench_door::run(
                &config,
                engine,
                &tools::bench_door::Options {
                    clips,
                    enroll,
                    fps,
                    repeat,
                    json,
                },
            )
        }
        Command::Bench {
            target:
                Some(BenchTarget::Stream {
                    frames,
                    enrollments,
                    fps,
                    scale,
                    threads,
                    json,
                }),
            ..
        } => {
            let threads = model_threads(threads);
            let store = models()?;
            let mut engines = Vec::new();
            let every = config.pipeline.redetect_ms;
            let schedules = if every > 0.0 {
                vec![
                    (format!("roi/{every:.0}ms"), every),
                    ("full".to_owned(), 0.0),
                ]
            } else {
                vec![("full".to_owned(), 0.0)]
            };
            for (name, redetect_ms) in schedules {
                let mut c = config.clone();
                c.pipeline.redetect_ms = redetect_ms;
                engines.push((name, engine(&store, &c)?));
            }
            tools::bench_stream::run(
                &config,
                engines,
                &tools::bench_stream::Options {
                    frames,
                    enrollments,
                    fps,
                    scale,
                    threads,
                    json,
                },
            )
        }
        Command::Bench {
            target:
                Some(BenchTarget::Models {
                    iterations,
                    model,
                    json,
                }),
            ..
        } => tools::bench_models::run(
            &models()?,
            &tools::bench_models::Options {
                iterations,
                model,
                threads: config.pipeline.threads,
                json,
            },
        ),
        Command::Bench { target: None, args } => {
            let precisions = match args.precision {
                Some(p) => vec![p],
                None => vec![config.models.precision, other(config.models.precision)],
            };
            let opts = tools::bench::Options {
                images: args.images,
                iterations: args.iterations,
                json: args.json,
            };
            let store = models()?;
            tools::bench::run(&opts, &precisions, |p| {
                load_pipeline(&store, &config, Some(p))
            })
        }
    }
}

/// `facegate run`: verify and load the models, open the store, serve until SIGTERM.
fn serve(
    mut config: Config,
    listen: Option<std::net::SocketAddr>,
    models: impl Fn() -> anyhow::Result<ModelStore>,
) -> anyhow::Result<()> {
    if let Some(addr) = listen {
        config.api.listen = addr;
    }
    let started = std::time::Instant::now();
    let model_store = models()?;
    // Loaded now so a broken model stops the start, not the first frame.
    let engine = engine(&model_store, &config)?;
    let store = open_store(&config)?;
    let cameras = start_cameras(&config)?;
    let secret = store.records().derive_secret("api-jwt-hs256");
    let sync = sync_state(&config, &store)?;
    let state = std::sync::Arc::new(crate::api::ApiState {
        sync,
        jwt: crate::api::auth::JwtKeys::new(secret.as_slice()),
        frame_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(
            config.api.frame_workers.max(1),
        )),
        frame_queue: std::sync::Arc::new(tokio::sync::Semaphore::new(config.api.frame_queue)),
        config,
        store,
        started,
        engine,
        sessions: crate::sessions::Sessions::default(),
        limits: crate::api::limits::RateLimits::default(),
        metrics: crate::api::metrics::Metrics::default(),
        shutdown: crate::api::Shutdown::default(),
        events: crate::api::events::Events::default(),
        open_sockets: std::sync::atomic::AtomicUsize::new(0),
        restart: std::sync::atomic::AtomicBool::new(false),
        cameras,
        feeds: crate::api::sessions::Feeds::default(),
    });
    for e in &state.cameras {
        if let Some(door) = &e.door {
            let host: std::sync::Arc<dyn crate::door::Host> = state.clone();
            crate::door::spawn(door.clone(), state.config.door.clone(), host)
                .context("starting a door thread")?;
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("facegate-api")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let addr = state.config.api.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        tracing::info!(address = %local, ms = started.elapsed().as_millis() as u64, "serving the API");
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on http://{local}")?;
            out.flush()?;
        }
        crate::api::serve(listener, state).await
    })
}

/// The pipeline, the liveness models and the decision thresholds, shared by sessions and doors.
/// The local sync API's state: site, terminal name, site key, sync token keys.
fn sync_state(config: &Config, store: &Store) -> anyhow::Result<crate::api::sync::SyncState> {
    let key = crate::api::sync::load_site_key(&config.sync)?;
    if !config.sync.site.is_empty() && key.is_none() {
        tracing::warn!("sync.site is set but no site key was given: the sync API answers 503");
    }
    let secret = store.records().derive_secret("sync-jwt-hs256");
    let instance = hex::encode(&store.records().derive_secret("sync-instance")[..8]);
    Ok(crate::api::sync::SyncState::new(
        config.sync.site.clone(),
        config.terminal_name(),
        instance,
        key,
        secret.as_slice(),
    ))
}

fn engine(model_store: &ModelStore, config: &Config) -> anyhow::Result<crate::sessions::Engine> {
    let (pipeline, live) = load_live(model_store, config)?;
    Ok(crate::sessions::Engine {
        pipeline,
        live,
        liveness: config.liveness.clone(),
        obstacles: config.obstacles.clone(),
        min_quality: config.matching.min_quality,
        match_threshold: config.matching.threshold,
        top_k: config.matching.top_k,
    })
}

/// Starts every configured camera's capture thread (a camera that cannot be opened yet is
/// retried in the background and shown `reconnecting`, it does not stop the start).
fn start_cameras(config: &Config) -> anyhow::Result<Vec<crate::api::cameras::CameraEntry>> {
    let specs = config.camera_specs()?;
    let mut out = Vec::new();
    for (spec, cc) in specs.into_iter().zip(&config.cameras) {
        let door = if cc.door {
            Some(crate::door::relay::Relay::new(&config.door)?)
        } else {
            None
        };
        tracing::info!(camera = %spec.id, source = %spec.source.describe(), door = cc.door, "starting camera");
        let camera = crate::camera::Camera::start(spec, config.limits.max_image_pixels);
        let door = door.map(|relay| {
            std::sync::Arc::new(crate::door::DoorHandle {
                camera: camera.clone(),
                view: std::sync::Mutex::default(),
                clients: cc.clients.clone(),
                relay,
                last_frame_ms: std::sync::atomic::AtomicU64::new(0),
            })
        });
        out.push(crate::api::cameras::CameraEntry {
            camera,
            door,
            clients: cc.clients.clone(),
        });
    }
    Ok(out)
}

fn other(p: Precision) -> Precision {
    match p {
        Precision::Fp32 => Precision::Int8,
        Precision::Int8 => Precision::Fp32,
    }
}

/// Where to look for `manifest.toml`: the configured directory, else the install locations,
/// else the source tree (so `cargo run` works from a fresh clone).
pub fn model_dirs(config: &Config) -> Vec<PathBuf> {
    if !config.models.dir.as_os_str().is_empty() {
        return vec![config.models.dir.clone()];
    }
    let mut dirs = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
    {
        dirs.push(exe_dir.join("../share/facegate/models"));
    }
    dirs.push(PathBuf::from("/usr/share/facegate/models"));
    dirs.push(PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models"
    )));
    dirs
}

pub fn open_models(config: &Config) -> anyhow::Result<ModelStore> {
    let started = std::time::Instant::now();
    let store = ModelStore::open_first(&model_dirs(config))?;
    tracing::info!(
        dir = %store.dir().display(),
        models = store.entries().len(),
        ms = started.elapsed().as_millis() as u64,
        "models verified (sha256)"
    );
    Ok(store)
}

pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    let (store, report) = Store::open(
        &config.data_dir,
        &KeySources::from_env(),
        &config.store,
        EMBEDDING_DIM,
    )
    .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    match &report.index {
        crate::store::IndexOrigin::Snapshot => tracing::info!(
            dir = %config.data_dir.display(), key = %report.key_source, enrollments = report.enrollments,
            ms = report.open_ms as u64, "store opened, index loaded from its snapshot"
        ),
        crate::store::IndexOrigin::Rebuilt { reason } => tracing::info!(
            dir = %config.data_dir.display(), key = %report.key_source, enrollments = report.enrollments,
            ms = report.open_ms as u64, %reason, "store opened, index rebuilt from the records"
        ),
    }
    Ok(store)
}

/// The recognition pipeline and the liveness models, at the configured precision.
fn load_live(store: &ModelStore, config: &Config) -> anyhow::Result<(Pipeline, LiveModels)> {
    let pipeline = load_pipeline(store, config, None)?;
    let live = LiveModels::load(store).context("loading the liveness models")?;
    Ok((pipeline, live))
}

pub fn load_pipeline(
    store: &ModelStore,
    config: &Config,
    precision: Option<Precision>,
) -> anyhow::Result<Pipeline> {
    let precision = precision.unwrap_or(config.models.precision);
    let started = std::time::Instant::now();
    let pipeline = Pipeline::load(
        store,
        PipelineConfig {
            detector: config.detector.clone(),
            quality: config.quality.clone(),
            limits: config.limits.clone(),
            precision,
            schedule: config.pipeline.clone(),
        },
    )
    .with_context(|| format!("loading the {} pipeline", precision.as_str()))?;
    tracing::info!(
        detector = pipeline.detector().name(),
        embedder = pipeline.embedder().name(),
        ms = started.elapsed().as_millis() as u64,
        "pipeline loaded"
    );
    Ok(pipeline)
}

/// Sets how many threads one model run may use (`pipeline.threads`, 0: the cores available)
/// and returns it: tract's matrix products share one pool of that many threads.
fn model_threads(configured: usize) -> usize {
    let n = match configured {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        n => n,
    };
    use tract_linalg::multithread::{Executor, set_default_executor};
    // Called again by `bench stream --threads N` after the configured value was set: one thread must
    // then replace the pool, not keep it (until 2026-12-03 `--threads 1` kept the cores' pool).
    set_default_executor(if n > 1 {
        Executor::multithread_with_name(n, "facegate-mm")
    } else {
        Executor::SingleThread
    });
    tracing::debug!(threads = n, "model threads");
    n
}

/// Logs go to journald when systemd gave us a journal stream, else to stderr.
/// `FACEGATE_LOG` (an `EnvFilter` directive) overrides the verbosity flags.
fn init_logging(verbosity: i16) {
    let level = match verbosity {
        ..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("FACEGATE_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},tract_core=warn,tract_hir=warn,tract_onnx=warn,tract_linalg=warn"
        ))
    });
    let journald = std::env::var_os("JOURNAL_STREAM")
        .and_then(|_| tracing_journald::layer().ok())
        .map(|l| l.with_syslog_identifier("facegate".into()).boxed());
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .boxed()
    });
    // A second init (tests calling run twice) is harmless: keep the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(stderr)
        .try_init();
}
