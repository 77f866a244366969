//! `weft`: the operator's command-line tool for the Weft mesh.
//!
//! It installs the control plane (`install`, `uninstall`), checks it
//! (`check`), meshes workloads (`inject`, `uninject`), runs the local demo,
//! makes identity material and writes ServiceProfiles, and shows the mesh's
//! golden metrics from the controller's metrics API (`stat`, `edges`,
//! `routes`, `top`) and the inbound policy of workloads (`authz`).

mod check;
mod demo;
mod identity;
mod inject;
mod install;
mod kube;
mod profile;
mod viz;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Command line of `weft`.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about = "Operate a Weft service mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    // About and long help come from `DemoArgs`.
    Demo(demo::DemoArgs),
    // About and long help come from `IdentityArgs`.
    Identity(identity::IdentityArgs),
    // About and long help come from `ProfileArgs`.
    Profile(profile::ProfileArgs),
    // About and long help come from `CheckArgs`.
    Check(check::CheckArgs),
    // About and long help come from `InstallArgs`.
    Install(install::InstallArgs),
    // About and long help come from `UninstallArgs`.
    Uninstall(install::uninstall::UninstallArgs),
    // About and long help come from `InjectArgs`.
    Inject(inject::InjectArgs),
    // About and long help come from `UninjectArgs`.
    Uninject(inject::UninjectArgs),
    // About and long help come from `StatArgs`.
    Stat(viz::stat::StatArgs),
    // About and long help come from `EdgesArgs`.
    Edges(viz::edges::EdgesArgs),
    // About and long help come from `RoutesArgs`.
    Routes(viz::routes::RoutesArgs),
    // About and long help come from `TopArgs`.
    Top(viz::top::TopArgs),
    // About and long help come from `AuthzArgs`.
    Authz(viz::authz::AuthzArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Demo(args) => runtime.block_on(demo::run(args)),
        Command::Identity(args) => identity::run(args),
        Command::Profile(args) => profile::run(&args).map_err(anyhow::Error::from),
        // `check` has its own exit statuses (1 when a check failed).
        Command::Check(args) => return check::main(&runtime, args),
        Command::Install(args) => install::run(args),
        Command::Uninstall(args) => runtime.block_on(install::uninstall::run(args)),
        Command::Inject(args) => runtime.block_on(inject::run_inject(args)),
        Command::Uninject(args) => inject::run_uninject(&args),
        Command::Stat(args) => runtime.block_on(viz::stat::run(args)),
        Command::Edges(args) => runtime.block_on(viz::edges::run(args)),
        Command::Routes(args) => runtime.block_on(viz::routes::run(args)),
        Command::Top(args) => runtime.block_on(viz::top::run(args)),
        Command::Authz(args) => runtime.block_on(viz::authz::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft: {e:#}");
            // Only the metrics commands raise `UsageError`: a command line
            // clap could not judge exits 2, as clap's own errors do.
            if e.downcast_ref::<viz::UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
