//! The `api` binary. `cargo run --release` at the repository root runs it
//! with embedded defaults: SQLite file, SQLite job queue, workers in-process.

#[tokio::main]
async fn main() {
    worker::process::tune_allocator();
    worker::process::init_tracing();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--print-schema") {
        print!("{}", api::graphql::sdl());
        return;
    }
    if let Some(unknown) = args.iter().find(|a| *a != "--with-worker") {
        eprintln!("corebank: unknown argument {unknown}; expected --with-worker or --print-schema");
        std::process::exit(2);
    }
    let config = api::config::Config::from_env(args.iter().any(|a| a == "--with-worker"));
    if let Err(e) = api::app::run(config, worker::process::shutdown_signal()).await {
        tracing::error!(error = %e, "corebank api failed");
        eprintln!("corebank: {e}");
        std::process::exit(1);
    }
}
