//! Writes the MCPServer CRD, generated from the Rust types, into the CRDs chart.
//! `crdgen` prints it; `crdgen --write` updates the committed file.
fn main() -> std::io::Result<()> {
    let text = toolhive_operator::api::crd_chart_template();
    if std::env::args().any(|a| a == "--write") {
        let path = format!("{}/{}", env!("CARGO_MANIFEST_DIR"), toolhive_operator::api::CRD_CHART_FILE);
        std::fs::write(&path, text)?;
        eprintln!("wrote {path}");
    } else {
        print!("{text}");
    }
    Ok(())
}
