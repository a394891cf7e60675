//! Writes what is generated from the Rust types: the MCPServer, MCPGroup and MCPToolConfig CRDs into
//! the CRDs chart and the tenancy policy's JSON schema into `config/`. `crdgen` prints
//! the MCPServer CRD; `crdgen --write` updates every committed file.
fn main() -> std::io::Result<()> {
    let crd = toolhive_operator::api::crd_chart_template();
    if std::env::args().any(|a| a == "--write") {
        for (file, text) in [
            (toolhive_operator::api::CRD_CHART_FILE, crd),
            (toolhive_operator::group::CRD_CHART_FILE, toolhive_operator::api::chart_template(toolhive_operator::group::crd())),
            (toolhive_operator::toolconfig::CRD_CHART_FILE, toolhive_operator::api::chart_template(toolhive_operator::toolconfig::crd())),
            (toolhive_operator::webhook::policy::SCHEMA_FILE, toolhive_operator::webhook::policy::schema_json()),
        ] {
            let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
            std::fs::write(&path, text)?;
            eprintln!("wrote {path}");
        }
    } else {
        print!("{crd}");
    }
    Ok(())
}
