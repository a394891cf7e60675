//! `controlplane up --dir D`: runs a local control plane in the foreground until
//! SIGTERM/SIGINT, writing `D/kubeconfig` and then `D/ready`. The Makefile runs it
//! in the background for `make controlplane` and stops it for `make controlplane-down`.
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// State directory (kubeconfig, logs, etcd data).
    #[arg(long)]
    dir: PathBuf,
    /// Do not run kube-controller-manager.
    #[arg(long)]
    no_controller_manager: bool,
    /// Also run a node (root; one per machine) so pods run: see `node.rs`.
    #[arg(long)]
    node: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = std::fs::remove_file(args.dir.join("ready"));
    let cp = controlplane::ControlPlane::start(controlplane::Options {
        controller_manager: !args.no_controller_manager,
        dir: Some(args.dir.clone()),
        node: args.node,
    })?;
    std::fs::write(args.dir.join("ready"), format!("{}\n", cp.server))?;
    println!("control plane ready: {}", cp.server);
    println!("kubeconfig: {}", cp.kubeconfig.display());
    // Block until asked to stop; Drop stops the children.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        anyhow::Ok(())
    })?;
    let _ = std::fs::remove_file(args.dir.join("ready"));
    drop(cp);
    Ok(())
}
