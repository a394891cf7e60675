//! The vMCP's audit log: its settings from `spec.config.audit`, passed to it as
//! written once checked (an event type it does not know would keep it from starting).

use serde::{Deserialize, Serialize};

use crate::shared::problem::Problem;

/// The vMCP's audit log settings, passed to it as written.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Audit {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub component: String,
    /// Only these event types (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
    /// Never these, whatever `event_types` says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_event_types: Vec<String>,
    #[serde(default)]
    pub include_request_data: bool,
    #[serde(default)]
    pub include_response_data: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_application_errors: Option<bool>,
    /// Bytes of request or response data kept in an event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_data_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delegation_depth: Option<i64>,
    /// Refused (`check`): events go to the container's standard output.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_file: String,
}

/// The event types the vMCP audits (it refuses to start on any other).
const AUDIT_EVENT_TYPES: &[&str] = &[
    "mcp_initialize",
    "mcp_tool_call",
    "mcp_tools_list",
    "mcp_resource_read",
    "mcp_resources_list",
    "mcp_prompt_get",
    "mcp_prompts_list",
    "mcp_notification",
    "mcp_ping",
    "mcp_logging",
    "mcp_completion",
    "mcp_roots_list_changed",
    "vmcp_workflow_started",
    "vmcp_workflow_completed",
    "vmcp_workflow_failed",
    "vmcp_workflow_timed_out",
    "vmcp_workflow_step_started",
    "vmcp_workflow_step_completed",
    "vmcp_workflow_step_failed",
    "vmcp_workflow_step_skipped",
    "mcp_request",
    "http_request",
];

/// The audit settings the vMCP cannot run as written, with their paths.
pub fn problems(audit: &Audit) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (field, types) in [("eventTypes", &audit.event_types), ("excludeEventTypes", &audit.exclude_event_types)] {
        for (i, kind) in types.iter().enumerate().filter(|(_, t)| !AUDIT_EVENT_TYPES.contains(&t.as_str())) {
            problems.push(Problem::at(
                format!("spec.config.audit.{field}[{i}]"),
                format!("{kind:?} is not an event type the vMCP audits; use one of {}", AUDIT_EVENT_TYPES.join(", ")),
            ));
        }
    }
    if !audit.log_file.is_empty() {
        problems.push(Problem::at(
            "spec.config.audit.logFile",
            "audit events go to the vMCP container's standard output (collect them from the pod's log); a file in the container is not carried out: remove it",
        ));
    }
    if audit.max_data_size.is_some_and(|n| n < 0) {
        problems.push(Problem::at("spec.config.audit.maxDataSize", "must be 0 or more bytes"));
    }
    if audit.max_delegation_depth.is_some_and(|n| n < 1) {
        problems.push(Problem::at("spec.config.audit.maxDelegationDepth", "must be 1 or more"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::kinds::virtualmcp::config::{parse, rendered};

    #[test]
    fn audit_settings_reach_the_file_and_a_log_file_or_bad_bounds_are_refused_with_their_paths() {
        let config = json!({"audit": {"enabled": true, "component": "team-vmcp", "eventTypes": ["mcp_tool_call"],
            "excludeEventTypes": ["mcp_ping"], "includeRequestData": true, "maxDataSize": 2048, "detectApplicationErrors": false}});
        let parsed = parse(Some(&config), "g").unwrap();
        let back = rendered(&parsed);
        assert_eq!(
            back["audit"],
            json!({"enabled": true, "component": "team-vmcp", "eventTypes": ["mcp_tool_call"], "excludeEventTypes": ["mcp_ping"],
                "includeRequestData": true, "includeResponseData": false, "detectApplicationErrors": false, "maxDataSize": 2048})
        );
        let without: Value = rendered(&parse(None, "g").unwrap());
        assert!(without.get("audit").is_none(), "no audit section unless asked for");
        let off: Value = rendered(&parse(Some(&json!({"audit": {"enabled": false, "component": "c"}})), "g").unwrap());
        assert!(off.get("audit").is_none(), "switched off: the vMCP would audit on finding a section");

        let bad = json!({"audit": {"enabled": true, "logFile": "/var/log/audit.log", "maxDataSize": -1, "maxDelegationDepth": 0,
            "eventTypes": ["mcp_tool_call", "tool_call"], "excludeEventTypes": ["nope"]}});
        let paths: Vec<String> = parse(Some(&bad), "g").unwrap_err().into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "spec.config.audit.eventTypes[1]",
                "spec.config.audit.excludeEventTypes[0]",
                "spec.config.audit.logFile",
                "spec.config.audit.maxDataSize",
                "spec.config.audit.maxDelegationDepth"
            ]
        );
        let typo = parse(Some(&json!({"audit": {"enable": true}})), "g").unwrap_err();
        assert!(typo[0].message.contains("enable"), "{typo:?}");
    }
}
