//! Writes what is generated from the Rust types: the MCPServer CRD and those of the
//! kinds it references into the CRDs chart and the tenancy policy's JSON schema into `config/`. `crdgen` prints
//! the MCPServer CRD; `crdgen --write` updates every committed file.
fn main() -> std::io::Result<()> {
    let crd = toolhive_operator::api::crd_chart_template();
    if std::env::args().any(|a| a == "--write") {
        let companions = toolhive_operator::api::companion_crds().map(|(file, crd)| (file, toolhive_operator::api::chart_template(crd)));
        let generated = [
            (toolhive_operator::api::CRD_CHART_FILE, crd),
            (toolhive_operator::webhook::policy::SCHEMA_FILE, toolhive_operator::webhook::policy::schema_json()),
        ];
        for (file, text) in generated.into_iter().chain(companions) {
            let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
            std::fs::write(&path, text)?;
            eprintln!("wrote {path}");
        }
    } else {
        print!("{crd}");
    }
    Ok(())
}
