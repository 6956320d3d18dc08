//! The command line. Names here are a contract: scripts, tests and other issues use them.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::pipeline::models::Precision;

#[derive(Debug, Parser)]
#[command(
    name = "facegate",
    version,
    about = "Face-recognition door terminal (with no command: `run`, the API server)"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file layered over the embedded defaults.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// State directory (default from the configuration).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Less log output (-q warnings only, -qq errors only).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub quiet: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the local REST + WebSocket API (the default command).
    Run {
        /// Address to listen on (default from the configuration: 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// A camera to read: `[NAME=]v4l:/dev/videoN[:WxH][@FPS]`, `[NAME=]replay:DIR[@FPS][,once]`
        /// or `[NAME=]replay:FILE.mjpeg[@FPS][,once]` (repeatable; replaces `[[cameras]]`).
        #[arg(long = "camera", value_name = "SPEC")]
        cameras: Vec<String>,
        /// Door mode on the cameras given with --camera (decide visits: granted / denied / unknown).
        #[arg(long)]
        door: bool,
    },
    /// Print a sync-scope token for `facegate-sync` (the local sync API; on a stopped
    /// terminal's data directory).
    SyncToken {
        /// Validity in days (default: sync.token_days).
        #[arg(long)]
        days: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// List the V4L2 capture devices with their formats, sizes and rates.
    Cameras {
        #[arg(long)]
        json: bool,
    },
    /// Detect faces (boxes, 5 landmarks, quality) in one image.
    Detect {
        image: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Embed the largest face of one image (192-d, L2-normalised).
    Embed {
        image: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Verification and identification accuracy over a folder-per-identity dataset.
    Eval {
        #[arg(long, value_name = "DIR")]
        dataset: PathBuf,
        /// Model precision (default from the configuration).
        #[arg(long)]
        precision: Option<Precision>,
        #[arg(long)]
        json: bool,
    },
    /// Enroll one person from one or more photos (offline import); the template is the
    /// quality-weighted mean of the photos' embeddings.
    Enroll {
        #[arg(long)]
        user_id: String,
        #[arg(long, default_value = "default")]
        client: String,
        #[arg(required = true)]
        images: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// 1:N identification of the largest face against the client's enrollments.
    Identify {
        image: PathBuf,
        #[arg(long, default_value = "default")]
        client: String,
        #[arg(long)]
        json: bool,
    },
    /// List or delete enrollments.
    Enrollments {
        #[command(subcommand)]
        action: EnrollmentsAction,
    },
    /// Manage local API clients (tenants).
    Clients {
        #[command(subcommand)]
        action: ClientsAction,
    },
    /// Manage operators: people who log in with email + password and hold the admin scope.
    Operators {
        #[command(subcommand)]
        action: OperatorsAction,
    },
    /// Liveness over a folder of frames (sorted by name): blinks, head movements, the
    /// presentation-attack score and verdict, obstacles.
    Liveness {
        #[arg(long, value_name = "DIR")]
        frames: PathBuf,
        #[arg(long, default_value_t = 10.0)]
        fps: f64,
        #[arg(long)]
        json: bool,
    },
    /// Render a SYNTHETIC presentation attack (a photo held up as a print, bent print or
    /// screen; a print with the eyes cut out and a clip's real eyes behind it; a screen
    /// replaying a clip) as a folder of PNG frames.
    Attack {
        #[arg(long, value_name = "IMAGE", required_unless_present = "clip")]
        photo: Option<PathBuf>,
        /// Real frames: the eyes behind an eye-cut print, the video of a replay.
        #[arg(long, value_name = "DIR")]
        clip: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "print")]
        kind: crate::tools::attack::AttackKind,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value_t = 30)]
        frames: usize,
        #[arg(long, default_value_t = 10.0)]
        fps: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// APCER per synthetic attack type (from photos and clips); time to a live verdict and
    /// BPCER per window of real clips, at their own size and downscaled.
    PadEval {
        /// Photos (or folders of photos) to make attacks from.
        #[arg(long, value_name = "PATH", num_args = 1.., required_unless_present = "from_dump")]
        photos: Vec<PathBuf>,
        /// Folders of real frames (bona fide; also the eyes of eye-cut prints and the videos of
        /// replays).
        #[arg(long, value_name = "DIR", num_args = 1..)]
        clips: Vec<PathBuf>,
        /// Frames per attack sequence.
        #[arg(long, default_value_t = 50)]
        frames: usize,
        #[arg(long, default_value_t = 10.0)]
        fps: f64,
        /// Attack sequences per photo (or clip) and type (different motion, size, glare).
        #[arg(long, default_value_t = 1)]
        seeds: u64,
        /// The first attack seed (seeds run from it): a fresh draw of renders, held out from the
        /// seeds the rules were tuned on.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        first_seed: u64,
        /// Bona fide window for BPCER, frames.
        #[arg(long, default_value_t = 50)]
        window_frames: usize,
        /// Step between bona fide windows, frames.
        #[arg(long, default_value_t = 10)]
        window_stride: usize,
        /// A session's frame budget (time-to-live sessions start every second).
        #[arg(long, default_value_t = 50)]
        session_frames: usize,
        /// Face widths (pixels) of rescaled copies of each clip: a smaller one shrinks the face
        /// in a frame of the same size (farther away); a larger one is skipped unless
        /// `--enlarge`.
        #[arg(long, value_name = "PX", num_args = 0.., default_values_t = [120.0, 80.0])]
        face_widths: Vec<f32>,
        /// A `--face-widths` larger than a clip's face enlarges the whole frame (a
        /// higher-resolution camera at the same distance; at most 4 times).
        #[arg(long)]
        enlarge: bool,
        #[arg(long)]
        json: bool,
        /// Also write every sequence's per-frame observations (landmarks, eyelids, mesh,
        /// context votes) to this file as JSON lines, for tuning the cues offline.
        #[arg(long, value_name = "FILE")]
        dump: Option<PathBuf>,
        /// Judge the observations of an earlier `--dump` again under the configured liveness
        /// rules, instead of rendering and observing (no models run; seconds). `--fps` and the
        /// window and session options must be those of the run that wrote it.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["photos", "clips", "dump"])]
        from_dump: Option<PathBuf>,
    },
    /// Master and data keys of the store.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Per-stage latency of the pipeline, one frame at a time, fp32 and int8; `bench index` for the
    /// vector index.
    Bench {
        #[command(subcommand)]
        target: Option<BenchTarget>,
        #[command(flatten)]
        args: PipelineBenchArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnrollmentsAction {
    List {
        /// Only this client's enrollments (default: all).
        #[arg(long)]
        client: Option<String>,
        #[arg(long)]
        json: bool,
    },
    Delete {
        enrollment_id: String,
        #[arg(long, default_value = "default")]
        client: String,
    },
}

#[derive(Debug, Args)]
pub struct PipelineBenchArgs {
    /// Images to run (default: a built-in 640x480 JPEG with one face).
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    #[arg(long, default_value_t = 50)]
    pub iterations: usize,
    /// Run only this precision (default: both).
    #[arg(long)]
    pub precision: Option<Precision>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// A door's whole per-frame work over a clip, frame after frame (detection full or around
    /// tracked faces, liveness, one embedding per visit, 1:N over synthetic enrollments plus
    /// the person): per-frame cost by stage, decision frame, RSS; the configured schedule
    /// against the whole frame every frame.
    Stream {
        #[arg(long, value_name = "DIR")]
        frames: PathBuf,
        /// Synthetic enrollments in the scratch store (the person is enrolled too).
        #[arg(long, default_value_t = 10_000)]
        enrollments: usize,
        /// The clip's frame rate (frame timestamps).
        #[arg(long, default_value_t = 10.0)]
        fps: f64,
        /// Resize the frames by this factor first (2: 640x360 as 1280x720).
        #[arg(long, default_value_t = 1.0)]
        scale: f32,
        /// Threads per model run (default 1: a door runs its models on its own thread).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
    /// Each shipped model alone in tract at the pipeline's input shape, on `pipeline.threads`
    /// threads (models/tools/runtimes.py puts it next to onnxruntime).
    Models {
        #[arg(long, default_value_t = 50)]
        iterations: usize,
        /// Only this model (its manifest name, e.g. `centerface`), every shape (for a profiler)
        #[arg(long, value_name = "NAME")]
        model: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Per-frame cost of the liveness stack (detect, eyes, mask, palm, cues) over a folder of
    /// frames, as scheduled in a stream (mask and palm on a track's first frames, then every N).
    Liveness {
        #[arg(long, value_name = "DIR")]
        frames: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The encrypted store at scale: bulk import, disk size, start from snapshot and by
    /// rebuild (fresh processes), identify through the store, audit append latency.
    Store {
        #[arg(long, default_value_t = 100_000)]
        n: usize,
        #[arg(long, default_value_t = 192)]
        dim: usize,
        /// Enrollments per transaction in the import.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        #[arg(long)]
        json: bool,
        /// Internal: measure one start of the store in DIR (run by the bench itself).
        #[arg(long, hide = true, value_name = "DIR")]
        open_only: Option<PathBuf>,
    },
    /// Door mode over clips replayed at a camera's rate: one camera, then all at once; time to
    /// the decision, per-frame cost, CPU, dropped frames, RSS.
    Door {
        /// Folders of frames, one camera each.
        #[arg(long = "clip", value_name = "DIR", required = true)]
        clips: Vec<PathBuf>,
        /// Photos of the person to enroll first (the clips' person is then granted).
        #[arg(long, value_name = "IMAGE", num_args = 1..)]
        enroll: Vec<PathBuf>,
        #[arg(long, default_value_t = 30.0)]
        fps: f64,
        /// Show each recorded frame N times: the shared 10 fps clips as a 30 fps camera with
        /// `--fps 30 --repeat 3` (motion at its real speed, three frames per recorded one).
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        #[arg(long)]
        json: bool,
    },
    /// Vector index at scale: f32 / f16 / i8 search latency, recall@1, memory, snapshots.
    Index {
        #[arg(long, default_value_t = 100_000)]
        n: usize,
        #[arg(long, default_value_t = 192)]
        dim: usize,
        /// Probes searched (recall@1 is against exact brute force).
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientsAction {
    /// Create a client; its API key and secret are printed once.
    Add {
        name: String,
        /// How its `encrypted_data` payloads are sealed: AES-256-GCM (key SHA-256 of the
        /// secret), or the reference service's AES-256-CBC (key SHA-256 of the API key).
        #[arg(long, value_enum, default_value = "aes-256-gcm")]
        payload_encryption: PayloadEncryption,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PayloadEncryption {
    #[value(name = "aes-256-gcm")]
    Aes256Gcm,
    #[value(name = "aes-256-cbc")]
    Aes256Cbc,
}

#[derive(Debug, Subcommand)]
pub enum OperatorsAction {
    /// Create an operator (admin scope), or set an existing one's password. The password is
    /// read from the first line of standard input (at least 12 characters).
    Set {
        email: String,
        #[arg(long, default_value = "")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// New data key: every sealed record and the index snapshot are re-sealed with it, and it
    /// is wrapped under the master key. The master key is replaced too when it lives in the
    /// data directory's key file; a systemd credential or FACEGATE_MASTER_KEY is kept unless
    /// --new-master-key-file gives the one to use (install it as the credential afterwards).
    Rotate {
        #[arg(long, value_name = "FILE")]
        new_master_key_file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}
