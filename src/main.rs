//! `streamgate`: read the `.env` file, parse and validate the flags, check the machine, run.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use streamgate::config::{Cli, LoadError, dotenv};
use streamgate::{app, logging, shard};

// `--features system-alloc` builds with the system allocator instead, for heap profilers
// (heaptrack) that cannot see mimalloc's allocations.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let env_file = env_file(&args);
    match dotenv::read_missing(&env_file) {
        Ok(pairs) => {
            for (key, value) in pairs {
                // SAFETY: no other thread exists yet, so nothing reads the environment
                // concurrently with this write.
                unsafe { std::env::set_var(key, value) };
            }
        }
        Err(e) => {
            eprintln!("streamgate: cannot read env file {} (--env-file): {e}", env_file.display());
            return ExitCode::from(2);
        }
    }
    let cli = match Cli::parse_args(&args) {
        Ok(cli) => cli,
        Err(LoadError::Clap(e)) => e.exit(),
        Err(LoadError::Invalid(e)) => return startup_error(&e),
    };
    let config = match cli.validate(&shard::preflight::allowed_cpus()) {
        Ok(config) => config,
        Err(e) => return startup_error(&e),
    };
    logging::init(config.log_level.filter(), config.log_format);
    shard::conn::install_panic_hook();
    if let Err(e) = shard::preflight::check() {
        eprintln!("streamgate: {e}");
        return ExitCode::FAILURE;
    }
    app::run(config)
}

fn startup_error(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("streamgate: {e}");
    ExitCode::from(2)
}

/// `--env-file PATH`, `--env-file=PATH`, else `STREAMGATE_ENV_FILE`, else `.env`; found before
/// clap runs because the file feeds clap's environment.
fn env_file(args: &[OsString]) -> PathBuf {
    let mut it = args.iter().skip(1);
    while let Some(arg) = it.next() {
        let Some(s) = arg.to_str() else { continue };
        if s == "--env-file" {
            if let Some(path) = it.next() {
                return PathBuf::from(path);
            }
        } else if let Some(path) = s.strip_prefix("--env-file=") {
            return PathBuf::from(path);
        }
    }
    std::env::var_os("STREAMGATE_ENV_FILE").map_or_else(|| PathBuf::from(".env"), PathBuf::from)
}
