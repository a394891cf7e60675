//! Writes the MCPServer CRD, generated from the Rust types, into the CRDs chart.
//! `crdgen` prints it; `crdgen --write` updates the committed file.
fn main() -> std::io::Result<()> {
    let text = toolhive_operator::api::crd_chart_template();
    if std::env::args().any(|a| a == "--write") {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/charts/toolhive-operator-crds/templates/toolhive.stacklok.dev_mcpservers.yaml");
        std::fs::write(path, text)?;
        eprintln!("wrote {path}");
    } else {
        print!("{text}");
    }
    Ok(())
}
