//! The bottom layer: what every kind of the API shares (CRD conventions, references
//! to Secrets and ConfigMaps, conditions, the configuration kinds' status) and the
//! operator's settings and errors, resource quantities. It uses nothing else of the crate.
pub mod conditions;
pub mod config;
pub mod configkind;
pub mod crd;
pub mod error;
pub mod meta;
pub mod podtemplate;
pub mod problem;
pub mod quantity;
pub mod refs;
pub mod remote_url;
