//! Writes what is generated from the Rust types: every kind's CRD into the CRDs
//! chart and the tenancy policy's JSON schema into `config/`. `crdgen` prints the
//! MCPServer CRD; `crdgen --write` updates every committed file.
use toolhive_operator::{kinds, shared::crd::chart_template, webhook::policy};

fn main() -> std::io::Result<()> {
    if std::env::args().any(|a| a == "--write") {
        let crds = kinds::crds().into_iter().map(|(file, crd)| (file, chart_template(crd)));
        for (file, text) in crds.chain([(policy::SCHEMA_FILE, policy::schema_json())]) {
            let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
            std::fs::write(&path, text)?;
            eprintln!("wrote {path}");
        }
    } else {
        print!("{}", chart_template(kinds::mcpserver::api::crd()));
    }
    Ok(())
}
