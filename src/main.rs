use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lineworks_operator::telemetry::{self, LogFormat};

/// LINE WORKS visitor notifications, declared as Kubernetes objects.
#[derive(Parser)]
#[command(name = "lineworks-operator", version, about)]
struct Cli {
    /// Log format of long-running subcommands.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the LineWorksNotifier CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller against the cluster of the current kubeconfig (or in-cluster config).
    Controller,
    /// Serve the LINE WORKS API emulator (tests, demo, local development).
    Emulator {
        /// JSON file describing the tenant (domains, users, apps, bots, rooms).
        #[arg(long)]
        world: Option<std::path::PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8089")]
        listen: String,
    },
    /// Start a local control plane, install the CRD and the examples, and show them.
    #[cfg(feature = "local-control-plane")]
    Demo {
        /// Keep the control plane running until Ctrl-C.
        #[arg(long)]
        wait: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Crd => lineworks_operator::crd::crd_yaml()
            .map(|yaml| print!("{yaml}"))
            .map_err(Into::into),
        Command::Controller => {
            telemetry::init(cli.log_format);
            lineworks_operator::controller::run()
                .await
                .map_err(Into::into)
        }
        Command::Emulator { world, listen } => {
            telemetry::init(cli.log_format);
            lineworks_operator::emulator::run(world.as_deref(), &listen)
                .await
                .map_err(Into::into)
        }
        #[cfg(feature = "local-control-plane")]
        Command::Demo { wait } => lineworks_operator::demo::run(wait)
            .await
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
